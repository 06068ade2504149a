"""Task-vector PCA per layer across fine-tuned runs that share a base."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.extract.weights import open_weights
    from ckptlens.store.atomic import atomic_path
    from ckptlens.task_vectors.pca import task_vector_pca

    import json

    files = json.loads(snakemake.params.files)  # {"base": checkpoint, run: checkpoint}
    patterns = json.loads(snakemake.params.weights)  # the weight targets of each
    base = open_weights(files.pop("base"), patterns["base"])
    runs = list(files)
    rows = task_vector_pca(
        base,
        [open_weights(files[r], patterns[r]) for r in runs],
        snakemake.params.n_components,
        run=snakemake.wildcards.name,
    )
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"{len(runs)} runs, {len(rows)} values")
