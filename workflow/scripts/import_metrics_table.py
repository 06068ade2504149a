"""A metrics table computed elsewhere -> results/runs/{run}/metrics.parquet (the tidy format)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.table import load_table
    from ckptlens.store.tidy import write_table

    table = load_table(
        snakemake.input[0],
        runs=[snakemake.params.select],
        layers=snakemake.params.layers,
        metrics=snakemake.params.metrics,
    )
    table = table.assign(run=snakemake.wildcards.run)
    write_table(table, snakemake.output[0])
    print(f"{len(table)} rows, {table['metric'].nunique()} metrics, {table['layer'].nunique()} layers")
