# Task vectors across runs that share a base (fine-tuning seeds): PCA per layer across runs, and
# (optional `sample:`) new weights drawn from the principal components, evaluated on the task.


rule task_vectors:
    input:
        get_task_vector_inputs,
    output:
        table="results/task_vectors/{name}/task_vectors.csv",
    log:
        "results/task_vectors/{name}/logs/task_vectors.log",
    conda:
        "../envs/ckptlens.yaml"
    params:
        n_components=lambda w: TASK_VECTORS[w.name].get("n_components", 3),
        files=lambda w: canonical(task_vector_files(w.name)),
        code=script_code("task_vectors"),
    script:
        "../scripts/task_vectors.py"


rule plot_task_vectors:
    input:
        "results/task_vectors/{name}/task_vectors.csv",
    output:
        report(
            "results/task_vectors/{name}/task_vectors.png",
            caption="../report/task_vectors.rst",
            category=STUDY,
            subcategory="task vectors: {name}",
            labels={"stage": "task vectors", "figure": "PCA per layer"},
        ),
    log:
        "results/task_vectors/{name}/logs/plot_task_vectors.log",
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=script_code("plot_task_vectors"),
    script:
        "../scripts/plot_task_vectors.py"


# ---------------------------------------------------------------- sampling from the components
# One sampling job per task-vector set (its outputs, the n_samples files, differ per set).
for _name in TV_SAMPLE:

    rule:
        name:
            f"sample_task_vectors_{identifier(_name)}"
        input:
            tv_checkpoint_dirs(_name),
        output:
            mean=tv_sample_files(_name)["mean"],
            samples=tv_sample_files(_name)["samples"],
            components=f"results/task_vectors/{_name}/samples/components.csv",
            coefficients=f"results/task_vectors/{_name}/samples/coefficients.csv",
        log:
            f"results/task_vectors/{_name}/logs/sample_task_vectors.log",
        conda:
            "../envs/ckptlens.yaml"
        params:
            name=_name,
            base_run=TASK_VECTORS[_name]["base_run"],
            checkpoints=canonical(tv_checkpoints(_name)),
            sample=canonical(tv_sample_params(_name)),
            code=script_code("sample_task_vectors"),
        script:
            "../scripts/sample_task_vectors.py"


rule evaluate_task_vector_samples:
    input:
        get_evaluation_inputs,
    output:
        table="results/task_vectors/{name}/samples.csv",
    log:
        "results/task_vectors/{name}/logs/evaluate_task_vector_samples.log",
    wildcard_constraints:
        name=_alternatives(TV_EVALUATED),
    conda:
        "../envs/ckptlens.yaml"
    threads: 2
    params:
        evaluate=lambda w: canonical(TV_SAMPLE[w.name]["evaluate"]),
        rows=lambda w: canonical(tv_evaluation_rows(w.name)),
        code=script_code("evaluate_task_vector_samples"),
    script:
        "../scripts/evaluate_task_vector_samples.py"


rule plot_task_vector_samples:
    input:
        "results/task_vectors/{name}/samples.csv",
    output:
        report(
            "results/task_vectors/{name}/samples.png",
            caption="../report/task_vector_samples.rst",
            category=STUDY,
            subcategory="task vectors: {name}",
            labels={"stage": "task vectors", "figure": "sampled weights"},
        ),
    log:
        "results/task_vectors/{name}/logs/plot_task_vector_samples.log",
    wildcard_constraints:
        name=_alternatives(TV_EVALUATED),
    conda:
        "../envs/ckptlens.yaml"
    params:
        settings=lambda w: canonical(tv_sample_params(w.name)),
        code=script_code("plot_task_vector_samples"),
    script:
        "../scripts/plot_task_vector_samples.py"
