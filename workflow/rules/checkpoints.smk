# Checkpoints: results/{run}/checkpoints/step{step}.safetensors, trained here or imported.

# One training rule per trained run: its outputs (the checkpoint list) differ per run.
for _run in TRAINED_RUNS:

    rule:
        name:
            f"train_toy_{identifier(_run)}"
        output:
            checkpoints=[
                f"results/{_run}/checkpoints/step{s}.safetensors" for s in STEPS[_run]
            ],
            log_csv=f"results/{_run}/train_log.csv",
        log:
            f"results/{_run}/logs/train.log",
        threads: 1
        resources:
            gpu=1,
        params:
            kind=config["runs"][_run]["source"]["type"],
            source=canonical(config["runs"][_run]["source"]),
            train=canonical(ckcfg.train_settings(config, _run)),
            steps=STEPS[_run],
            code=ckio.source_hash("toy"),
        script:
            "../../scripts/train_toy.py"


rule import_local_checkpoint:
    input:
        get_local_checkpoint,
    output:
        "results/{run}/checkpoints/step{step}.safetensors",
    log:
        "results/{run}/logs/import/step{step}.log",
    wildcard_constraints:
        run=_alternatives(LOCAL_RUNS),
    script:
        "../../scripts/import_checkpoint.py"


# Hugging Face revisions: downloaded by the job (never while the workflow is parsed), converted
# to safetensors, download folder removed; the converted file itself is temp() when delete_after.
rule fetch_hf_checkpoint:
    output:
        temp("results/{run}/checkpoints/step{step}.safetensors"),
    log:
        "results/{run}/logs/fetch/step{step}.log",
    wildcard_constraints:
        run=_alternatives(HF_TEMP_RUNS),
    retries: 2
    params:
        model=lambda w: config["runs"][w.run]["source"]["model"],
        revision=lambda w: ckcfg.hf_revisions(config, w.run)[int(w.step)],
        cache_dir=lambda w: config["runs"][w.run]["source"].get("cache_dir"),
    script:
        "../../scripts/fetch_checkpoint.py"


use rule fetch_hf_checkpoint as fetch_hf_checkpoint_kept with:
    output:
        "results/{run}/checkpoints/step{step}.safetensors",
    wildcard_constraints:
        run=_alternatives([r for r in HF_RUNS if r not in HF_TEMP_RUNS]),


rule checkpoint_digest:
    input:
        "results/{run}/checkpoints/step{step}.safetensors",
    output:
        "results/{run}/digests/step{step}.txt",
    log:
        "results/{run}/logs/digest/step{step}.log",
    script:
        "../../scripts/checkpoint_digest.py"


# Warn when two steps hold identical weights (a published Pythia model serves byte-identical
# weights under different step names).
rule identical_steps:
    input:
        get_checkpoint_digests,
    output:
        "results/{run}/identical_steps.csv",
    log:
        "results/{run}/logs/identical_steps.log",
    script:
        "../../scripts/identical_steps.py"
