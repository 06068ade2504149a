# The tidy table of a run: run, step, layer, metric, value.


rule aggregate_metrics:
    input:
        get_family_tables,
    output:
        report(
            "results/{run}/metrics.parquet",
            caption="../report/metrics_table.rst",
            category="{run}",
            subcategory="tables",
        ),
    log:
        "results/{run}/logs/aggregate.log",
    script:
        "../../scripts/aggregate_metrics.py"
