# Extraction, per checkpoint, of only what the enabled metrics need.
# Weights need no model (numpy, lazy reads); activations and gradients share one model load.


rule extract_weights:
    input:
        run_path("{run}", "checkpoints/step{step}.safetensors"),
    output:
        run_path("{run}", "extract/weights/step{step}.safetensors"),
    log:
        run_path("{run}", "logs/extract_weights/step{step}.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        patterns=lambda w: ckcfg.targets(config, w.run)["weights"],
        code=script_code("extract_weights"),
    script:
        "../scripts/extract_weights.py"


# One model-extraction rule per run (generated, like training): its outputs are exactly the kinds
# the run's enabled metrics need, all from one model load (torch is imported once per checkpoint).
for _run in [r for r in RUNS if model_extractions(r)]:

    rule:
        name:
            f"extract_model_{identifier(_run)}"
        input:
            run_path(_run, "checkpoints/step{step}.safetensors"),
        output:
            **{
                kind: run_path(_run, f"extract/{kind}/step{{step}}.safetensors")
                for kind in model_extractions(_run)
            },
        log:
            run_path(_run, "logs/extract_model/step{step}.log"),
        conda:
            "../envs/ckptlens.yaml"
        resources:
            gpu=1,
        params:
            targets=canonical(ckcfg.targets(config, _run)),
            probe=canonical(ckcfg.probe(config, _run)),
            code=script_code("extract_model"),
        script:
            "../scripts/extract_model.py"
