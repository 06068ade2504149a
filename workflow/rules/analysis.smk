# Cross-metric analysis per run: PCA of the standardized metric matrices, per-layer correlations.


rule cross_metric_analysis:
    input:
        unpack(get_analysis_inputs),
    output:
        pca="results/{run}/analysis/pca.csv",
        loadings="results/{run}/analysis/pca_loadings.csv",
        correlation="results/{run}/analysis/correlation.csv",
        notes="results/{run}/analysis/notes.txt",
    log:
        "results/{run}/logs/analysis.log",
    params:
        pairs=config.get("analysis", {}).get("correlation_pairs"),
        code=ckio.source_hash("analysis", "labels"),
    script:
        "../../scripts/analyse.py"


# Per layer and metric: when the trajectory settles and where it changes abruptly; for a trained
# run also the training log's loss and errors (the phase transition is plainest there).
rule detect_dynamics:
    input:
        unpack(get_dynamics_inputs),
    output:
        "results/{run}/analysis/dynamics.csv",
    log:
        "results/{run}/logs/dynamics.log",
    params:
        settings=canonical(DYNAMICS),
        code=ckio.source_hash("dynamics"),
    script:
        "../../scripts/detect_dynamics.py"
