# Plots (matplotlib only in these jobs). In the report: category = the study, subcategory = the
# run (or "all runs" for figures across runs), label "stage" = the stage that made the figure.


rule plot_trajectories:
    input:
        table=run_path("{run}", "metrics.parquet"),
        dynamics=run_path("{run}", "analysis/dynamics.csv"),
    output:
        report(
            directory(run_path("{run}", "plots/trajectories")),
            patterns=["trajectory_{metric}.png"],
            caption="../report/trajectory.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "metric trajectories", "figure": "{metric}"},
        ),
    log:
        run_path("{run}", "logs/plot_trajectories.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        descriptions=lambda w: metric_descriptions(w.run),
        code=script_code("plot_trajectories"),
    script:
        "../scripts/plot_trajectories.py"


rule plot_training:
    input:
        run_path("{run}", "train_log.csv"),
    output:
        report(
            run_path("{run}", "plots/training.png"),
            caption="../report/training.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "training", "figure": "loss and errors"},
        ),
    log:
        run_path("{run}", "logs/plot_training.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("plot_training"),
    script:
        "../scripts/plot_training.py"


rule plot_analysis:
    input:
        pca=run_path("{run}", "analysis/pca.csv"),
        correlation=run_path("{run}", "analysis/correlation.csv"),
    output:
        pca=report(
            run_path("{run}", "plots/pca.png"),
            caption="../report/pca.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "PCA"},
        ),
        correlation=report(
            run_path("{run}", "plots/correlation.png"),
            caption="../report/correlation.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "correlation"},
        ),
    log:
        run_path("{run}", "logs/plot_analysis.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("plot_analysis"),
    script:
        "../scripts/plot_analysis.py"


# A figure across runs (config `figures`): data settings, seeds or model sizes side by side.
rule plot_study_figure:
    input:
        unpack(get_figure_inputs),
    output:
        report(
            "results/figures/{figure}.png",
            caption="../report/study_figure.rst",
            category=STUDY,
            subcategory="all runs",
            labels=lambda w: {"stage": FIGURES[w.figure]["kind"], "figure": w.figure},
        ),
    log:
        "results/figures/logs/{figure}.log",
    conda:
        "../envs/ckptlens.yaml"
    params:
        spec=lambda w: canonical(FIGURES[w.figure]),
        descriptions=lambda w: figure_descriptions(w.figure),
        code=script_code("plot_study_figure"),
    script:
        "../scripts/plot_study_figure.py"
