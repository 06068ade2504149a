"""All family tables of a run -> results/{run}/metrics.parquet."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.results import collect_family_tables, write_table

    table = collect_family_tables(snakemake.input)
    write_table(table, snakemake.output[0])
    print(f"{len(table)} rows, {table['metric'].nunique()} metrics, {table['step'].nunique()} steps")
