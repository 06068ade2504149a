# Checkpoints: results/runs/{run}/checkpoints/chunk{chunk}/step{step}.safetensors, trained here or
# fetched, a chunk of checkpoints per job (ckptlens.config.chunks). A local safetensors checkpoint
# (file, save_pretrained folder, shards) is read in place: its step file is a reference to it
# (ckptlens.store.tensors.write_reference), a few hundred bytes.


# One training rule per trained run: its outputs (the chunk folders) differ per run.
for _run in TRAINED_RUNS:

    rule:
        name:
            f"train_{identifier(_run)}"
        output:
            checkpoints=[
                directory(layout.chunk_dir(_run, layout.CHECKPOINTS, c))
                for c in range(len(CHUNKS[_run]))
            ],
            log_csv=layout.train_log(_run),
        log:
            layout.run_log(_run, "train"),
        benchmark:
            layout.run_benchmark(_run, "train")
        conda:
            "../envs/ckptlens.yaml"
        threads: 1
        resources:
            gpu=1,
        params:
            source=canonical(config["runs"][_run]["source"]),
            files=canonical(
                {s: PLAN.step_file(_run, layout.CHECKPOINTS, s) for s in STEPS[_run]}
            ),
            code=get_code("train", run=_run),
        script:
            "../scripts/train.py"


# A chunk of local files referenced (safetensors) or converted (pickles), or of hub revisions
# downloaded and converted, with the weights digest of each. Each local weight file and config.json
# is an input: one replaced reruns its chunk and everything read from it. A checkpoint that cannot be read becomes a failure record, whatever the policy:
# on_bad_checkpoint is a param of the aggregation only, so switching it refetches nothing.
rule materialise_checkpoints:
    input:
        get_source_inputs,
    output:
        checkpoints=directory(layout.chunk_dir("{run}", layout.CHECKPOINTS, "{chunk}")),
        digests=layout.digests("{run}", "{chunk}"),
    log:
        layout.run_log("{run}", "materialise_checkpoints/chunk{chunk}"),
    benchmark:
        layout.run_benchmark("{run}", "materialise_checkpoints/chunk{chunk}")
    wildcard_constraints:
        run=alternatives([r for r in FETCHED_RUNS if r not in TEMPORARY_RUNS]),
    conda:
        "../envs/ckptlens.yaml"
    params:
        source=lambda w: canonical(PLAN.source_params(w.run, w.chunk)),
        files=lambda w: canonical(
            PLAN.chunk_step_files(w.run, layout.CHECKPOINTS, w.chunk)
        ),
        code=get_code("materialise_checkpoints"),
    script:
        "../scripts/materialise_checkpoints.py"


# The same, the checkpoints deleted once every job reading them has run (delete_after of a hub
# source); the digests stay.
use rule materialise_checkpoints as materialise_temporary_checkpoints with:
    output:
        checkpoints=temp(
            directory(layout.chunk_dir("{run}", layout.CHECKPOINTS, "{chunk}"))
        ),
        digests=layout.digests("{run}", "{chunk}"),
    wildcard_constraints:
        run=alternatives(TEMPORARY_RUNS),


# Warn when two steps hold identical weights (a published Pythia model serves byte-identical
# weights under different step names).
rule identical_steps:
    input:
        get_checkpoint_digests,
    output:
        layout.identical_steps("{run}"),
    log:
        layout.run_log("{run}", "identical_steps"),
    benchmark:
        layout.run_benchmark("{run}", "identical_steps")
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=get_code("identical_steps"),
    script:
        "../scripts/identical_steps.py"


# A fetched run's training history (a Hugging Face Trainer's trainer_state.json of its last
# checkpoint, or a Lightning CSVLogger's metrics.csv) as its train_log.csv, the training log a
# trained run writes.
rule training_log:
    input:
        lambda w: PLAN.fetched_logs[w.run],
    output:
        layout.train_log("{run}"),
    log:
        layout.run_log("{run}", "training_log"),
    benchmark:
        layout.run_benchmark("{run}", "training_log")
    wildcard_constraints:
        run=alternatives(PLAN.fetched_logs),
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=get_code("training_log"),
    script:
        "../scripts/training_log.py"
