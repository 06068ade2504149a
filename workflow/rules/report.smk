# The findings in the report, not only the figures: the analysis tables of each run as small,
# self-contained HTML pages (the report shows HTML inline; CSV and Parquet only as downloads).
# Same grouping as the figures (plots.smk): category = the study, subcategory = the run. Every
# run's pages are targets of `rule all` (ckptlens.plan.Plan.report_table_outputs).


rule report_tables:
    input:
        pca=layout.analysis_table("{run}", "pca"),
        loadings=layout.analysis_table("{run}", "pca_loadings"),
        correlation=layout.analysis_table("{run}", "correlation"),
        notes=layout.analysis_notes("{run}"),
        dynamics=layout.analysis_table("{run}", "dynamics"),
    output:
        pca=report(
            layout.report_table("{run}", "pca"),
            caption="../report/pca_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "PCA (table)"},
        ),
        correlation=report(
            layout.report_table("{run}", "correlation"),
            caption="../report/correlation_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "correlation (table)"},
        ),
        dynamics=report(
            layout.report_table("{run}", "dynamics"),
            caption="../report/dynamics_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={
                "stage": "dynamics",
                "figure": "convergence and change points (table)",
            },
        ),
    log:
        layout.run_log("{run}", "report_tables"),
    benchmark:
        layout.run_benchmark("{run}", "report_tables")
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("report_tables"),
    script:
        "../scripts/report_tables.py"
