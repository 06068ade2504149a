"""The run's PCA, correlation and dynamics tables as HTML pages for the report."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from pathlib import Path

    import pandas as pd

    from ckptlens.plots.tables import correlation_page, dynamics_page, pca_page, write_page

    run = snakemake.wildcards.run
    notes = Path(snakemake.input.notes).read_text().splitlines()
    write_page(
        pca_page(pd.read_csv(snakemake.input.pca), pd.read_csv(snakemake.input.loadings), run, notes),
        snakemake.output.pca,
    )
    write_page(correlation_page(pd.read_csv(snakemake.input.correlation), run), snakemake.output.correlation)
    write_page(dynamics_page(pd.read_csv(snakemake.input.dynamics), run), snakemake.output.dynamics)
