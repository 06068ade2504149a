"""Task-vector PCA per layer across fine-tuned runs that share a base."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.store.atomic import atomic_path
    from ckptlens.store.tensors import TensorFile
    from ckptlens.task_vectors.pca import task_vector_pca

    import json

    files = json.loads(snakemake.params.files)  # {"base": file, run: file}
    base = TensorFile(files.pop("base"), float16_as_float32=True)  # float16 where the checkpoint is
    runs = list(files)
    rows = task_vector_pca(
        base,
        [TensorFile(files[r], float16_as_float32=True) for r in runs],
        snakemake.params.n_components,
        run=snakemake.wildcards.name,
    )
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"{len(runs)} runs, {len(rows)} values")
