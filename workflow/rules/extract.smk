# Extraction, a chunk of checkpoints per job, of only what the enabled metrics need.
# Weights need no model (numpy, lazy reads); activations and gradients share one model, built once
# per chunk with each checkpoint's weights loaded in turn (torch is imported once per chunk).


rule extract_weights:
    input:
        layout.chunk_dir("{run}", layout.CHECKPOINTS, "{chunk}"),
    output:
        directory(layout.chunk_dir("{run}", layout.extraction("weights"), "{chunk}")),
    log:
        layout.run_log("{run}", "extract_weights/chunk{chunk}"),
    benchmark:
        layout.run_benchmark("{run}", "extract_weights/chunk{chunk}")
    conda:
        "../envs/ckptlens.yaml"
    params:
        patterns=lambda w: ckcfg.targets(config, w.run)["weights"],
        steps=lambda w: PLAN.chunk_steps(w.run, w.chunk),
        code=get_code("extract_weights"),
    script:
        "../scripts/extract_weights.py"


# One model-extraction rule per run (generated, like training): its outputs are exactly the kinds
# the run's enabled metrics need, all from one model.
for _run in [r for r in COMPUTED_RUNS if PLAN.model_extractions(r)]:

    rule:
        name:
            f"extract_model_{identifier(_run)}"
        input:
            layout.chunk_dir(_run, layout.CHECKPOINTS, "{chunk}"),
            probe=PLAN.probe_inputs(_run),
        output:
            **{
                kind: directory(
                    layout.chunk_dir(_run, layout.extraction(kind), "{chunk}")
                )
                for kind in PLAN.model_extractions(_run)
            },
        log:
            layout.run_log(_run, "extract_model/chunk{chunk}"),
        benchmark:
            layout.run_benchmark(_run, "extract_model/chunk{chunk}")
        conda:
            "../envs/ckptlens.yaml"
        threads: PLAN.extraction_threads(_run)
        resources:
            gpu=lambda w, run=_run: PLAN.extraction_resources(run, w.chunk)["gpu"],
            # estimated from the checkpoint's header, the targets and the probe
            # (ckptlens.plan.Plan.extraction_resources); a run's `resources` overrides them
            mem_mb=lambda w, run=_run: PLAN.extraction_resources(run, w.chunk)["mem_mb"],
            runtime=lambda w, run=_run: PLAN.extraction_resources(run, w.chunk)[
                "runtime"
            ],
        params:
            targets=canonical(ckcfg.targets(config, _run)),
            probe=canonical(ckcfg.probe(config, _run)),
            gradient_statistics=canonical(PLAN.gradient_statistics(_run)),
            steps=lambda w, run=_run: PLAN.chunk_steps(run, w.chunk),
            code=get_code("extract_model"),
        script:
            "../scripts/extract_model.py"
