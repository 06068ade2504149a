# Plots (matplotlib only in these jobs).


rule plot_trajectories:
    input:
        "results/{run}/metrics.parquet",
    output:
        report(
            directory("results/{run}/plots/trajectories"),
            patterns=["trajectory_{metric}.png"],
            caption="../report/trajectory.rst",
            category="{run}",
            subcategory="metric trajectories",
            labels={"run": "{run}", "metric": "{metric}"},
        ),
    params:
        code=ckio.source_hash("plots"),
    log:
        "results/{run}/logs/plot_trajectories.log",
    script:
        "../../scripts/plot_trajectories.py"


rule plot_training:
    input:
        "results/{run}/train_log.csv",
    output:
        report(
            "results/{run}/plots/training.png",
            caption="../report/training.rst",
            category="{run}",
            subcategory="training",
        ),
    params:
        code=ckio.source_hash("plots"),
    log:
        "results/{run}/logs/plot_training.log",
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
            category="{run}",
            subcategory="cross-metric analysis",
        ),
        correlation=report(
            "results/{run}/plots/correlation.png",
            caption="../report/correlation.rst",
            category="{run}",
            subcategory="cross-metric analysis",
        ),
    params:
        code=ckio.source_hash("plots"),
    log:
        "results/{run}/logs/plot_analysis.log",
    script:
        "../../scripts/plot_analysis.py"
