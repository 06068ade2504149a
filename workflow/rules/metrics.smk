# Metrics: one job per (run, checkpoint, metric family), numpy only.
# The family's parameters and a hash of its code are params, so Snakemake reruns a family's jobs
# (and only those) when either changes.


rule metric_family:
    input:
        unpack(get_metric_inputs),
    output:
        run_path("{run}", "metrics/{family}/step{step}.csv"),
    log:
        run_path("{run}", "logs/metrics/{family}/step{step}.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        metrics=lambda w: canonical(family_metrics(w.run, w.family)),
        code=lambda w: family_code(w.family),
        layers=lambda w: canonical(family_layers(w.run, w.family)),
    script:
        "../scripts/metric_family.py"
