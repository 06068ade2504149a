"""Cross-metric PCA and per-layer correlations of one run."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.analysis import gap_notes, metric_correlations, pca_explained_variance
    from ckptlens.store.atomic import atomic_path, write_text

    table = pd.read_parquet(snakemake.input.table)
    gaps = gap_notes(pd.read_csv(snakemake.input.missing)) if "missing" in snakemake.input.keys() else []
    explained, loadings, notes = pca_explained_variance(table)
    pairs = snakemake.params.pairs
    corr, corr_notes = metric_correlations(table, [tuple(p) for p in pairs] if pairs else None)
    for df, key in ((explained, "pca"), (loadings, "loadings"), (corr, "correlation")):
        with atomic_path(snakemake.output[key]) as tmp:
            df.to_csv(tmp, index=False)
    write_text(snakemake.output.notes, "".join(f"{n}\n" for n in gaps + notes + corr_notes))
    for n in gaps + notes + corr_notes:
        print(n)
