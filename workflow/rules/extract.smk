# Extraction, per checkpoint, of only what the enabled metrics need.
# Weights need no model (numpy, lazy reads); activations and gradients share one model load.


rule extract_weights:
    input:
        "results/{run}/checkpoints/step{step}.safetensors",
    output:
        "results/{run}/extract/weights/step{step}.safetensors",
    log:
        "results/{run}/logs/extract_weights/step{step}.log",
    params:
        patterns=lambda w: ckcfg.targets(config, w.run)["weights"],
        code=ckio.source_hash("extract", "adapters", "checkpoint_io"),
    script:
        "../../scripts/extract_weights.py"


# One model-extraction rule per run (generated, like training): its outputs are exactly the kinds
# the run's enabled metrics need, all from one model load (torch is imported once per checkpoint).
for _run in [r for r in RUNS if model_kinds(r)]:

    rule:
        name:
            f"extract_model_{identifier(_run)}"
        input:
            f"results/{_run}/checkpoints/step{{step}}.safetensors",
        output:
            **{
                kind: f"results/{_run}/extract/{kind}/step{{step}}.safetensors"
                for kind in model_kinds(_run)
            },
        log:
            f"results/{_run}/logs/extract_model/step{{step}}.log",
        resources:
            gpu=1,
        params:
            targets=canonical(ckcfg.targets(config, _run)),
            probe=canonical(ckcfg.probe(config, _run)),
            code=ckio.source_hash("extract", "hf", "toy", "adapters", "checkpoint_io"),
        script:
            "../../scripts/extract_model.py"
