# Checkpoints: results/runs/{run}/checkpoints/step{step}.safetensors, trained here or fetched.


# One training rule per trained run: its outputs (the checkpoint list) differ per run.
for _run in TRAINED_RUNS:

    rule:
        name:
            f"train_{identifier(_run)}"
        output:
            checkpoints=[
                run_path(_run, f"checkpoints/step{s}.safetensors") for s in STEPS[_run]
            ],
            log_csv=run_path(_run, "train_log.csv"),
        log:
            run_path(_run, "logs/train.log"),
        conda:
            "../envs/ckptlens.yaml"
        threads: 1
        resources:
            gpu=1,
        params:
            source=canonical(config["runs"][_run]["source"]),
            steps=STEPS[_run],
            code=script_code("train"),
        script:
            "../scripts/train.py"


# A local file imported, or a hub revision downloaded and converted; the policy for a checkpoint
# that cannot be read is not a param: switching it must not refetch every good checkpoint
# (aggregation re-checks the records).
rule materialise_checkpoint:
    input:
        get_source_inputs,
    output:
        run_path("{run}", "checkpoints/step{step}.safetensors"),
    log:
        run_path("{run}", "logs/materialise/step{step}.log"),
    wildcard_constraints:
        run=_alternatives([r for r in FETCHED_RUNS if r not in TEMPORARY_RUNS]),
    conda:
        "../envs/ckptlens.yaml"
    params:
        source=lambda w: canonical(
            ckcfg.source(config, w.run).step_params(
                config["runs"][w.run]["source"], int(w.step)
            )
        ),
        code=script_code("materialise_checkpoint"),
    script:
        "../scripts/materialise_checkpoint.py"


# The same, deleted once every job reading it has run (delete_after of a hub source).
use rule materialise_checkpoint as materialise_temporary_checkpoint with:
    output:
        temp(run_path("{run}", "checkpoints/step{step}.safetensors")),
    wildcard_constraints:
        run=_alternatives(TEMPORARY_RUNS),


rule checkpoint_digest:
    input:
        run_path("{run}", "checkpoints/step{step}.safetensors"),
    output:
        run_path("{run}", "digests/step{step}.txt"),
    log:
        run_path("{run}", "logs/digest/step{step}.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("checkpoint_digest"),
    script:
        "../scripts/checkpoint_digest.py"


# Warn when two steps hold identical weights (a published Pythia model serves byte-identical
# weights under different step names).
rule identical_steps:
    input:
        get_checkpoint_digests,
    output:
        run_path("{run}", "identical_steps.csv"),
    log:
        run_path("{run}", "logs/identical_steps.log"),
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("identical_steps"),
    script:
        "../scripts/identical_steps.py"
