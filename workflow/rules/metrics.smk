# Metrics: one job per (run, part, metric family), numpy only; a part is a group of chunks
# (ckptlens.config.metric_parts). The family's parameters and a hash of its code are params, so
# Snakemake reruns a family's jobs (and only those) when either changes.


rule metric_family:
    input:
        get_metric_inputs,
    output:
        run_path("{run}", "metrics/{family}/part{part}.csv"),
    log:
        run_path("{run}", "logs/metric_family/{family}/part{part}.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        metrics=lambda w: canonical(family_metrics(w.run, w.family)),
        code=lambda w: family_code(w.family),
        layers=lambda w: canonical(family_layers(w.run, w.family)),
        files=lambda w: canonical(metric_step_inputs(w.run, w.family, int(w.part))),
    script:
        "../scripts/metric_family.py"
