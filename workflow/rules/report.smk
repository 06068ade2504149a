# The findings in the report, not only the figures: the analysis tables of each run as small,
# self-contained HTML pages (the report shows HTML inline; CSV and Parquet only as downloads).
# Same grouping as the figures (plots.smk): category = the study, subcategory = the run.
REPORT_TABLES = ("pca", "correlation", "dynamics")
# every run's pages: part of `rule all`
REPORT_TABLE_OUTPUTS = [
    run_path(run, f"report/{table}.html") for run in RUNS for table in REPORT_TABLES
]


rule report_tables:
    input:
        pca=run_path("{run}", "analysis/pca.csv"),
        loadings=run_path("{run}", "analysis/pca_loadings.csv"),
        correlation=run_path("{run}", "analysis/correlation.csv"),
        notes=run_path("{run}", "analysis/notes.txt"),
        dynamics=run_path("{run}", "analysis/dynamics.csv"),
    output:
        pca=report(
            run_path("{run}", "report/pca.html"),
            caption="../report/pca_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "PCA (table)"},
        ),
        correlation=report(
            run_path("{run}", "report/correlation.html"),
            caption="../report/correlation_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "correlation (table)"},
        ),
        dynamics=report(
            run_path("{run}", "report/dynamics.html"),
            caption="../report/dynamics_table.rst",
            category=STUDY,
            subcategory="{run}",
            labels={
                "stage": "dynamics",
                "figure": "convergence and change points (table)",
            },
        ),
    log:
        run_path("{run}", "logs/report_tables.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("report_tables"),
    script:
        "../scripts/report_tables.py"
