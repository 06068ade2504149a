# The tidy table of a run: run, step, layer, metric, value.


# A step whose checkpoint failed (on_bad_checkpoint: skip) is left out of the table and listed in
# missing_steps.csv; under fail its record is an error naming it.
rule aggregate_metrics:
    input:
        get_family_tables,
    output:
        table=report(
            "results/{run}/metrics.parquet",
            caption="../report/metrics_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "tidy table", "figure": "metrics.parquet"},
        ),
        missing="results/{run}/missing_steps.csv",
    log:
        "results/{run}/logs/aggregate.log",
    wildcard_constraints:
        run=_alternatives(COMPUTED_RUNS),
    params:
        on_bad_checkpoint=ckcfg.on_bad_checkpoint(config),
        code=ckio.source_hash("results", "faults"),
    script:
        "../../scripts/aggregate_metrics.py"


# A table run: metrics computed elsewhere, analysed and plotted here.
rule import_metrics_table:
    input:
        lambda w: config["runs"][w.run]["source"]["path"],
    output:
        "results/{run}/metrics.parquet",
    log:
        "results/{run}/logs/import_table.log",
    wildcard_constraints:
        run=_alternatives(TABLE_RUNS),
    params:
        select=lambda w: config["runs"][w.run]["source"].get("select", w.run),
        layers=lambda w: config["runs"][w.run]["source"].get("layers"),
        metrics=lambda w: config["runs"][w.run]["source"].get("metrics"),
    script:
        "../../scripts/import_table.py"
