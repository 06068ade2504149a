# The tidy table of a run: run, step, layer, metric, value.


# A step whose checkpoint failed (on_bad_checkpoint: skip) is left out of the table and listed in
# missing_steps.csv; under fail its record is an error naming it.
rule aggregate_metrics:
    input:
        get_family_tables,
    output:
        table=report(
            layout.metrics_table("{run}"),
            caption="../report/metrics_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "tidy table", "figure": "metrics.parquet"},
        ),
        missing=layout.missing_steps("{run}"),
    log:
        layout.run_log("{run}", "aggregate"),
    benchmark:
        layout.run_benchmark("{run}", "aggregate")
    wildcard_constraints:
        run=alternatives(COMPUTED_RUNS),
    conda:
        "../envs/ckptlens.yaml"
    params:
        on_bad_checkpoint=ckcfg.on_bad_checkpoint(config),
        code=get_code("aggregate_metrics"),
    script:
        "../scripts/aggregate_metrics.py"


# A table run: metrics computed elsewhere, analysed and plotted here.
rule import_metrics_table:
    input:
        lambda w: config["runs"][w.run]["source"]["path"],
    output:
        layout.metrics_table("{run}"),
    log:
        layout.run_log("{run}", "import_metrics_table"),
    benchmark:
        layout.run_benchmark("{run}", "import_metrics_table")
    wildcard_constraints:
        run=alternatives(TABLE_RUNS),
    conda:
        "../envs/ckptlens.yaml"
    params:
        select=lambda w: config["runs"][w.run]["source"].get("select", w.run),
        layers=lambda w: config["runs"][w.run]["source"].get("layers"),
        metrics=lambda w: config["runs"][w.run]["source"].get("metrics"),
        code=get_code("import_metrics_table"),
    script:
        "../scripts/import_metrics_table.py"
