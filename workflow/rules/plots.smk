# Plots (matplotlib only in these jobs). In the report: category = the study, subcategory = the
# run (or "all runs" for figures across runs), label "stage" = the stage that made the figure.


rule plot_trajectories:
    input:
        table="results/{run}/metrics.parquet",
        dynamics="results/{run}/analysis/dynamics.csv",
    output:
        report(
            directory("results/{run}/plots/trajectories"),
            patterns=["trajectory_{metric}.png"],
            caption="../report/trajectory.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "metric trajectories", "figure": "{metric}"},
        ),
    log:
        "results/{run}/logs/plot_trajectories.log",
    params:
        descriptions=lambda w: metric_descriptions(w.run),
        code=ckio.source_hash("plots", "labels"),
    script:
        "../../scripts/plot_trajectories.py"


rule plot_training:
    input:
        "results/{run}/train_log.csv",
    output:
        report(
            "results/{run}/plots/training.png",
            caption="../report/training.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "training", "figure": "loss and errors"},
        ),
    log:
        "results/{run}/logs/plot_training.log",
    params:
        code=ckio.source_hash("plots", "labels"),
    script:
        "../../scripts/plot_training.py"


rule plot_analysis:
    input:
        pca="results/{run}/analysis/pca.csv",
        correlation="results/{run}/analysis/correlation.csv",
    output:
        pca=report(
            "results/{run}/plots/pca.png",
            caption="../report/pca.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "PCA"},
        ),
        correlation=report(
            "results/{run}/plots/correlation.png",
            caption="../report/correlation.rst",
            category=STUDY,
            subcategory="{run}",
            labels={"stage": "cross-metric analysis", "figure": "correlation"},
        ),
    log:
        "results/{run}/logs/plot_analysis.log",
    params:
        code=ckio.source_hash("plots", "labels"),
    script:
        "../../scripts/plot_analysis.py"


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
    params:
        spec=lambda w: canonical(FIGURES[w.figure]),
        descriptions=lambda w: figure_descriptions(w.figure),
        code=ckio.source_hash("plots", "study_plots", "labels"),
    script:
        "../../scripts/plot_study_figure.py"
