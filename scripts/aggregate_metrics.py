"""All family tables of a run -> results/{run}/metrics.parquet, and the steps whose checkpoint
failed -> results/{run}/missing_steps.csv (an error instead under on_bad_checkpoint: fail)."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.faults import describe_missing
    from ckptlens.io import atomic_path
    from ckptlens.results import collect_run_tables, write_table

    table, missing = collect_run_tables(snakemake.input, snakemake.params.on_bad_checkpoint)
    write_table(table, snakemake.output.table)
    with atomic_path(snakemake.output.missing) as tmp:
        missing.to_csv(tmp, index=False)
    print(f"{len(table)} rows, {table['metric'].nunique()} metrics, {table['step'].nunique()} steps")
    if len(missing):
        print(f"WARNING: {len(missing)} step(s) missing: {describe_missing(missing.to_dict('records'))}")
