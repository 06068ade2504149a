"""PCA explained variance and the per-layer correlation heatmap."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.plots.correlation import plot_correlation
    from ckptlens.plots.pca import plot_pca

    plot_pca(pd.read_csv(snakemake.input.pca), snakemake.output.pca)
    plot_correlation(pd.read_csv(snakemake.input.correlation), snakemake.output.correlation)
