"""The run's PCA, correlation and dynamics tables, a preview of its tidy table and its interactive
explorer, as HTML pages for the report."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from pathlib import Path

    import pandas as pd

    from ckptlens.plots.explorer import explorer_html, write_explorer
    from ckptlens.plots.tables import correlation_page, dynamics_page, metrics_page, pca_page, write_page

    run = snakemake.wildcards.run
    notes = Path(snakemake.input.notes).read_text().splitlines()
    write_page(
        pca_page(pd.read_csv(snakemake.input.pca), pd.read_csv(snakemake.input.loadings), run, notes),
        snakemake.output.pca,
    )
    write_page(correlation_page(pd.read_csv(snakemake.input.correlation), run), snakemake.output.correlation)
    write_page(dynamics_page(pd.read_csv(snakemake.input.dynamics), run), snakemake.output.dynamics)
    table = pd.read_parquet(snakemake.input.table)
    write_page(metrics_page(table, run), snakemake.output.metrics)
    dynamics = pd.read_csv(snakemake.input.dynamics)
    logs = {run: pd.read_csv(snakemake.input.train_log[0])} if snakemake.input.train_log else {}
    write_explorer(explorer_html(table, dynamics, logs, title=f"ckptlens explorer — {run}"), snakemake.output.explorer)
