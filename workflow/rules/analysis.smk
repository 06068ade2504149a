# Cross-metric analysis per run: PCA of the standardized metric matrices, per-layer correlations.


rule cross_metric_analysis:
    input:
        unpack(get_analysis_inputs),
    output:
        pca=layout.analysis_table("{run}", "pca"),
        loadings=layout.analysis_table("{run}", "pca_loadings"),
        correlation=layout.analysis_table("{run}", "correlation"),
        layers=layout.analysis_table("{run}", "correlation_layers"),
        notes=layout.analysis_notes("{run}"),
    log:
        layout.run_log("{run}", "cross_metric_analysis"),
    benchmark:
        layout.run_benchmark("{run}", "cross_metric_analysis")
    conda:
        "../envs/ckptlens.yaml"
    params:
        pairs=config.get("analysis", {}).get("correlation_pairs"),
        source_notes=lambda w: PLAN.source_notes(w.run),
        code=get_code("cross_metric_analysis"),
    script:
        "../scripts/cross_metric_analysis.py"


# Per layer and metric: when the trajectory settles and where it changes abruptly; for a trained
# run also the training log's loss and errors (the phase transition is plainest there).
rule detect_dynamics:
    input:
        unpack(get_dynamics_inputs),
    output:
        layout.analysis_table("{run}", "dynamics"),
    log:
        layout.run_log("{run}", "detect_dynamics"),
    benchmark:
        layout.run_benchmark("{run}", "detect_dynamics")
    conda:
        "../envs/ckptlens.yaml"
    params:
        settings=canonical(DYNAMICS),
        code=get_code("detect_dynamics"),
    script:
        "../scripts/detect_dynamics.py"
