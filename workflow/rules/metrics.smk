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
    resources:
        # estimated from the largest input and the references (ckptlens.plan.Plan.metric_resources);
        # a run's `resources.metrics` overrides them
        mem_mb=lambda w: PLAN.metric_resources(w.run, w.family, w.part)["mem_mb"],
        runtime=lambda w: PLAN.metric_resources(w.run, w.family, w.part)["runtime"],
        gpu=lambda w: PLAN.metric_resources(w.run, w.family, w.part)["gpu"],
    params:
        metrics=lambda w: canonical(PLAN.family_metrics(w.run, w.family)),
        code=get_code("metric_family"),
        layers=lambda w: canonical(PLAN.family_layers(w.run, w.family)),
        files=lambda w: canonical(PLAN.metric_step_inputs(w.run, w.family, w.part)),
        # a weights family reads these matrices from the checkpoints themselves
        weights=lambda w: canonical(PLAN.family_weight_patterns(w.run, w.family)),
    script:
        "../scripts/metric_family.py"
