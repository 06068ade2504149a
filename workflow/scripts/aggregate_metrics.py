"""All metric tables of a run -> results/runs/{run}/metrics.parquet, and the steps whose checkpoint
failed -> missing_steps.csv (an error instead under on_bad_checkpoint: fail)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.store.atomic import atomic_path
    from ckptlens.store.records import describe_missing
    from ckptlens.store.tidy import write_table
    from ckptlens.table.aggregate import MissingStepsError, collect_run_tables, remove_products

    try:
        table, missing = collect_run_tables(snakemake.input, snakemake.params.on_bad_checkpoint)
    except MissingStepsError:
        # no table now: nothing made from the previous one stays (Snakemake removes this job's outputs)
        from ckptlens.store.layout import table_products

        run = snakemake.wildcards.run
        figures = [name for name, fig in snakemake.config.get("figures", {}).items() if run in fig.get("runs", ())]
        removed = remove_products(table_products(run, figures))
        if removed:
            print(
                f"no metrics table for run {snakemake.wildcards.run!r}: removed what was made from its previous "
                f"table, so that nothing is left from before ({len(removed)}): {', '.join(removed)}"
            )
        raise
    write_table(table, snakemake.output.table)
    with atomic_path(snakemake.output.missing) as tmp:
        missing.to_csv(tmp, index=False)
    print(f"{len(table)} rows, {table['metric'].nunique()} metrics, {table['step'].nunique()} steps")
    if len(missing):
        print(f"WARNING: {len(missing)} step(s) missing: {describe_missing(missing.to_dict('records'))}")
