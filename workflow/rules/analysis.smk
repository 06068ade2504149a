# Cross-metric analysis per run: PCA of the standardized metric matrices, per-layer correlations.


rule cross_metric_analysis:
    input:
        unpack(get_analysis_inputs),
    output:
        pca=run_path("{run}", "analysis/pca.csv"),
        loadings=run_path("{run}", "analysis/pca_loadings.csv"),
        correlation=run_path("{run}", "analysis/correlation.csv"),
        layers=run_path("{run}", "analysis/correlation_layers.csv"),
        notes=run_path("{run}", "analysis/notes.txt"),
    log:
        run_path("{run}", "logs/cross_metric_analysis.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        pairs=config.get("analysis", {}).get("correlation_pairs"),
        code=script_code("cross_metric_analysis"),
    script:
        "../scripts/cross_metric_analysis.py"


# Per layer and metric: when the trajectory settles and where it changes abruptly; for a trained
# run also the training log's loss and errors (the phase transition is plainest there).
rule detect_dynamics:
    input:
        unpack(get_dynamics_inputs),
    output:
        run_path("{run}", "analysis/dynamics.csv"),
    log:
        run_path("{run}", "logs/detect_dynamics.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        settings=canonical(DYNAMICS),
        code=script_code("detect_dynamics"),
    script:
        "../scripts/detect_dynamics.py"
