# Metrics: one job per (run, part, metric family), numpy only; a part is a group of chunks
# (ckptlens.config.metric_parts). The family's parameters and a hash of its code are params, so
# Snakemake reruns a family's jobs (and only those) when either changes.


rule metric_family:
    input:
        get_metric_inputs,
    output:
        layout.metric_part("{run}", "{family}", "{part}"),
    log:
        layout.run_log("{run}", "metric_family/{family}/part{part}"),
    benchmark:
        layout.run_benchmark("{run}", "metric_family/{family}/part{part}")
    conda:
        "../envs/ckptlens.yaml"
    params:
        metrics=lambda w: canonical(PLAN.family_metrics(w.run, w.family)),
        code=lambda w: family_code(w.family),
        layers=lambda w: canonical(PLAN.family_layers(w.run, w.family)),
        files=lambda w: canonical(PLAN.metric_step_inputs(w.run, w.family, w.part)),
    script:
        "../scripts/metric_family.py"
