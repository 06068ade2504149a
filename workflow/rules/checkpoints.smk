# Checkpoints: results/{run}/checkpoints/step{step}.safetensors, trained here or imported.

# One training rule per trained run: its outputs (the checkpoint list) differ per run.
for _run in TRAINED_RUNS:

    rule:
        name:
            "train_toy_" + identifier(_run)
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
