# Extraction, a chunk of checkpoints per job, of only what the enabled metrics need: activations
# and gradients share one model, built once per chunk with each checkpoint's weights loaded in turn
# (torch is imported once per chunk). Weights are not extracted: the metric jobs read them from the
# checkpoints (ckptlens.extract.weights.open_weights).


# One model-extraction rule per run (generated, like training): its outputs are exactly the kinds
# the run's enabled metrics need, all from one model.
for _run in [r for r in COMPUTED_RUNS if PLAN.model_extractions(r)]:

    rule:
        name:
            f"extract_model_{identifier(_run)}"
        input:
            layout.chunk_dir(_run, layout.CHECKPOINTS, "{chunk}"),
            **PLAN.model_reference_inputs(_run),
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
            reference=PLAN.model_reference(_run),
            steps=lambda w, run=_run: PLAN.chunk_steps(run, w.chunk),
            code=get_code("extract_model"),
        script:
            "../scripts/extract_model.py"


# CKA to the final checkpoint from terms the extraction keeps (ckptlens.extract.similarity), not
# from stored activations: per chunk, the final checkpoint's activations are captured and held, and
# each checkpoint's compared with them. Apart from extract_model: one more checkpoint reruns these
# (a forward per checkpoint), not the gradients.
for _run in [r for r in COMPUTED_RUNS if PLAN.similarity_extraction(r)]:

    rule:
        name:
            f"extract_similarity_{identifier(_run)}"
        input:
            layout.chunk_dir(_run, layout.CHECKPOINTS, "{chunk}"),
            probe=PLAN.probe_inputs(_run),
            reference=PLAN.similarity_reference_dir(_run),
        output:
            similarity_terms=directory(
                layout.chunk_dir(
                    _run, layout.extraction("similarity_terms"), "{chunk}"
                )
            ),
        log:
            layout.run_log(_run, "extract_similarity/chunk{chunk}"),
        benchmark:
            layout.run_benchmark(_run, "extract_similarity/chunk{chunk}")
        conda:
            "../envs/ckptlens.yaml"
        threads: PLAN.extraction_threads(_run)
        resources:
            gpu=lambda w, run=_run: PLAN.extraction_resources(
                run, w.chunk, ["similarity_terms"]
            )["gpu"],
            mem_mb=lambda w, run=_run: PLAN.extraction_resources(
                run, w.chunk, ["similarity_terms"]
            )["mem_mb"],
            runtime=lambda w, run=_run: PLAN.extraction_resources(
                run, w.chunk, ["similarity_terms"]
            )["runtime"],
        params:
            targets=canonical(ckcfg.targets(config, _run)),
            probe=canonical(ckcfg.probe(config, _run)),
            reference=PLAN.similarity_reference(_run),
            steps=lambda w, run=_run: PLAN.chunk_steps(run, w.chunk),
            code=get_code("extract_similarity"),
        script:
            "../scripts/extract_similarity.py"
