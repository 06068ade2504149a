# The tidy table of a run: run, step, layer, metric, value.


# A step whose checkpoint failed (on_bad_checkpoint: skip) is left out of the table and listed in
# missing_steps.csv; under fail its record is an error naming it.
rule aggregate_metrics:
    input:
        get_family_tables,
    output:
        table=report(
            run_path("{run}", "metrics.parquet"),
            caption="../report/metrics_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "tidy table", "figure": "metrics.parquet"},
        ),
        missing=run_path("{run}", "missing_steps.csv"),
    log:
        run_path("{run}", "logs/aggregate.log"),
    wildcard_constraints:
        run=_alternatives(COMPUTED_RUNS),
    conda:
        "../envs/ckptlens.yaml"
    params:
        on_bad_checkpoint=ckcfg.on_bad_checkpoint(config),
        code=script_code("aggregate_metrics"),
    script:
        "../scripts/aggregate_metrics.py"


# A table run: metrics computed elsewhere, analysed and plotted here.
rule import_metrics_table:
    input:
        lambda w: config["runs"][w.run]["source"]["path"],
    output:
        run_path("{run}", "metrics.parquet"),
    log:
        run_path("{run}", "logs/import_metrics_table.log"),
    wildcard_constraints:
        run=_alternatives(TABLE_RUNS),
    conda:
        "../envs/ckptlens.yaml"
    params:
        select=lambda w: config["runs"][w.run]["source"].get("select", w.run),
        layers=lambda w: config["runs"][w.run]["source"].get("layers"),
        metrics=lambda w: config["runs"][w.run]["source"].get("metrics"),
        code=script_code("import_metrics_table"),
    script:
        "../scripts/import_metrics_table.py"
