# Extraction, a chunk of checkpoints per job, of only what the enabled metrics need.
# Weights need no model (numpy, lazy reads); activations and gradients share one model, built once
# per chunk with each checkpoint's weights loaded in turn (torch is imported once per chunk).


rule extract_weights:
    input:
        chunk_dir("{run}", "checkpoints", "{chunk}"),
    output:
        directory(chunk_dir("{run}", "extract/weights", "{chunk}")),
    log:
        run_path("{run}", "logs/extract_weights/chunk{chunk}.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        patterns=lambda w: ckcfg.targets(config, w.run)["weights"],
        steps=lambda w: chunk_steps(w.run, w.chunk),
        code=script_code("extract_weights"),
    script:
        "../scripts/extract_weights.py"


# One model-extraction rule per run (generated, like training): its outputs are exactly the kinds
# the run's enabled metrics need, all from one model.
for _run in [r for r in COMPUTED_RUNS if model_extractions(r)]:

    rule:
        name:
            f"extract_model_{identifier(_run)}"
        input:
            chunk_dir(_run, "checkpoints", "{chunk}"),
        output:
            **{
                kind: directory(chunk_dir(_run, f"extract/{kind}", "{chunk}"))
                for kind in model_extractions(_run)
            },
        log:
            run_path(_run, "logs/extract_model/chunk{chunk}.log"),
        conda:
            "../envs/ckptlens.yaml"
        resources:
            gpu=1,
        params:
            targets=canonical(ckcfg.targets(config, _run)),
            probe=canonical(ckcfg.probe(config, _run)),
            steps=lambda w, run=_run: chunk_steps(run, w.chunk),
            code=script_code("extract_model"),
        script:
            "../scripts/extract_model.py"
