# The findings in the report, not only the figures: the analysis tables of each run as small,
# self-contained HTML pages (the report shows HTML inline; CSV and Parquet only as downloads), a
# preview of its tidy table, and its interactive explorer (ckptlens.plots.explorer: one HTML file,
# its data and script inlined).
# Same grouping as the figures (plots.smk): category = the study, subcategory = the run. Every
# run's pages are targets of `rule all` (ckptlens.plan.Plan.report_outputs), the study's landing page too.


rule report_tables:
    input:
        pca=layout.analysis_table("{run}", "pca"),
        loadings=layout.analysis_table("{run}", "pca_loadings"),
        correlation=layout.analysis_table("{run}", "correlation"),
        notes=layout.analysis_notes("{run}"),
        dynamics=layout.analysis_table("{run}", "dynamics"),
        table=layout.metrics_table("{run}"),
        train_log=lambda w: (
            [layout.train_log(w.run)] if w.run in PLAN.logged_runs else []
        ),
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
        metrics=report(
            layout.report_table("{run}", "metrics"),
            caption="../report/metrics_preview.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "metrics table", "figure": "metrics preview (table)"},
        ),
        explorer=report(
            layout.report_table("{run}", "explorer"),
            caption="../report/explorer.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "metric trajectories", "figure": "interactive explorer"},
        ),
    log:
        layout.run_log("{run}", "report_tables"),
    benchmark:
        layout.run_benchmark("{run}", "report_tables")
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=get_code("report_tables"),
    script:
        "../scripts/report_tables.py"


# The report's landing page: the study at a glance (every run, the headline figures, the strongest
# correlations, the convergence table). workflow/report/workflow.rst embeds it in the report's
# opening view when it is among the report's results; the job graph stays one click away.


rule report_study:
    input:
        tables=[layout.metrics_table(run) for run in PLAN.runs],
        correlation=[layout.analysis_table(run, "correlation") for run in PLAN.runs],
        dynamics=[layout.analysis_table(run, "dynamics") for run in PLAN.runs],
        trajectories=[layout.trajectories_dir(run) for run in PLAN.runs],
        correlation_plots=[layout.plot(run, "correlation") for run in PLAN.runs],
        train_logs=[
            layout.train_log(run) for run in PLAN.runs if run in PLAN.logged_runs
        ],
    output:
        page=report(
            layout.study_page(),
            caption="../report/study.rst",
            category=STUDY,
            subcategory="study overview",
            labels={"stage": "study", "figure": "the study at a glance"},
        ),
        landing=layout.study_landing(),
        explorer=report(
            layout.study_explorer(),
            caption="../report/explorer_study.rst",
            category=STUDY,
            subcategory="study overview",
            labels={"stage": "study", "figure": "interactive explorer (every run)"},
        ),
    log:
        layout.figure_log("report_study"),
    benchmark:
        layout.figure_benchmark("report_study")
    conda:
        "../envs/ckptlens.yaml"
    params:
        runs=PLAN.runs,
        logged=[run for run in PLAN.runs if run in PLAN.logged_runs],
        study=STUDY,
        code=get_code("report_study"),
    script:
        "../scripts/report_study.py"
