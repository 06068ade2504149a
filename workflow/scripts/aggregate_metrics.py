"""All metric tables of a run -> results/runs/{run}/metrics.parquet, and the steps whose checkpoint
failed -> missing_steps.csv (an error instead under on_bad_checkpoint: fail)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.store.atomic import atomic_path
    from ckptlens.store.records import describe_missing
    from ckptlens.store.tidy import write_table
    from ckptlens.table.aggregate import collect_run_tables

    table, missing = collect_run_tables(snakemake.input, snakemake.params.on_bad_checkpoint)
    write_table(table, snakemake.output.table)
    with atomic_path(snakemake.output.missing) as tmp:
        missing.to_csv(tmp, index=False)
    print(f"{len(table)} rows, {table['metric'].nunique()} metrics, {table['step'].nunique()} steps")
    if len(missing):
        print(f"WARNING: {len(missing)} step(s) missing: {describe_missing(missing.to_dict('records'))}")
