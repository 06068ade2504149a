# Plots (matplotlib only in these jobs). In the report: category = the study, subcategory = the
# run (or "all runs" for figures across runs), label "stage" = the stage that made the figure.


rule plot_trajectories:
    input:
        table=layout.metrics_table("{run}"),
        dynamics=layout.analysis_table("{run}", "dynamics"),
    output:
        report(
            directory(layout.trajectories_dir("{run}")),
            patterns=[layout.trajectory_name("{metric}")],
            caption="../report/trajectory.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "metric trajectories", "figure": "{metric}"},
        ),
    log:
        layout.run_log("{run}", "plot_trajectories"),
    benchmark:
        layout.run_benchmark("{run}", "plot_trajectories")
    conda:
        "../envs/ckptlens.yaml"
    params:
        descriptions=lambda w: PLAN.metric_descriptions(w.run),
        code=get_code("plot_trajectories"),
    script:
        "../scripts/plot_trajectories.py"


rule plot_training:
    input:
        layout.train_log("{run}"),
    output:
        report(
            layout.plot("{run}", "training"),
            caption="../report/training.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "training", "figure": "loss and errors"},
        ),
    log:
        layout.run_log("{run}", "plot_training"),
    benchmark:
        layout.run_benchmark("{run}", "plot_training")
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=get_code("plot_training"),
    script:
        "../scripts/plot_training.py"


rule plot_analysis:
    input:
        pca=layout.analysis_table("{run}", "pca"),
        correlation=layout.analysis_table("{run}", "correlation"),
    output:
        pca=report(
            layout.plot("{run}", "pca"),
            caption="../report/pca.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "PCA"},
        ),
        correlation=report(
            layout.plot("{run}", "correlation"),
            caption="../report/correlation.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "correlation"},
        ),
    log:
        layout.run_log("{run}", "plot_analysis"),
    benchmark:
        layout.run_benchmark("{run}", "plot_analysis")
    # before report_tables when both are ready: the landing page (report_study) waits for these
    # figures, not for the tables, so the run ends sooner
    priority: 1
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=get_code("plot_analysis"),
    script:
        "../scripts/plot_analysis.py"


# A figure across runs (config `figures`): data settings, seeds or model sizes side by side.
rule plot_study_figure:
    input:
        unpack(get_figure_inputs),
    output:
        report(
            layout.figure("{figure}"),
            caption="../report/study_figure.rst",
            category=STUDY,
            subcategory="all runs",
            labels=lambda w: {"stage": FIGURES[w.figure]["kind"], "figure": w.figure},
        ),
    log:
        layout.figure_log("{figure}"),
    benchmark:
        layout.figure_benchmark("{figure}")
    conda:
        "../envs/ckptlens.yaml"
    params:
        spec=lambda w: canonical(FIGURES[w.figure]),
        descriptions=lambda w: PLAN.figure_descriptions(w.figure),
        code=get_code("plot_study_figure"),
    script:
        "../scripts/plot_study_figure.py"
