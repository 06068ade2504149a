# Task vectors across runs that share a base (fine-tuning seeds): PCA per layer across runs, and
# (optional `sample:`) new weights drawn from the principal components, evaluated on the task.


rule task_vectors:
    input:
        get_task_vector_inputs,
    output:
        table=layout.task_vector_table("{name}"),
    log:
        layout.task_vector_log("{name}", "task_vectors"),
    benchmark:
        layout.task_vector_benchmark("{name}", "task_vectors")
    conda:
        "../envs/ckptlens.yaml"
    params:
        n_components=lambda w: TASK_VECTORS[w.name].get("n_components", 3),
        files=lambda w: canonical(PLAN.task_vector_files(w.name)),
        weights=lambda w: canonical(PLAN.task_vector_patterns(w.name)),
        code=get_code("task_vectors"),
    script:
        "../scripts/task_vectors.py"


rule plot_task_vectors:
    input:
        layout.task_vector_table("{name}"),
    output:
        report(
            layout.task_vector_plot("{name}"),
            caption="../report/task_vectors.rst",
            category=STUDY,
            subcategory="task vectors: {name}",
            labels={"stage": "task vectors", "figure": "PCA per layer"},
        ),
    log:
        layout.task_vector_log("{name}", "plot_task_vectors"),
    benchmark:
        layout.task_vector_benchmark("{name}", "plot_task_vectors")
    conda:
        "../envs/ckptlens.yaml"
    params:
        code=get_code("plot_task_vectors"),
    script:
        "../scripts/plot_task_vectors.py"


# ---------------------------------------------------------------- sampling from the components
# One sampling job per task-vector set (its outputs, the n_samples files, differ per set).
for _name in TV_SAMPLE:

    rule:
        name:
            f"sample_task_vectors_{identifier(_name)}"
        input:
            PLAN.tv_checkpoint_dirs(_name),
        output:
            mean=PLAN.tv_sample_files(_name)["mean"],
            samples=PLAN.tv_sample_files(_name)["samples"],
            components=layout.sample_components(_name),
            coefficients=layout.sample_coefficients(_name),
        log:
            layout.task_vector_log(_name, "sample_task_vectors"),
        benchmark:
            layout.task_vector_benchmark(_name, "sample_task_vectors")
        conda:
            "../envs/ckptlens.yaml"
        params:
            name=_name,
            base_run=TASK_VECTORS[_name]["base_run"],
            checkpoints=canonical(PLAN.tv_checkpoints(_name)),
            sample=canonical(PLAN.tv_sample_params(_name)),
            code=get_code("sample_task_vectors"),
        script:
            "../scripts/sample_task_vectors.py"


rule evaluate_task_vector_samples:
    input:
        get_evaluation_inputs,
    output:
        table=layout.samples_table("{name}"),
    log:
        layout.task_vector_log("{name}", "evaluate_task_vector_samples"),
    benchmark:
        layout.task_vector_benchmark("{name}", "evaluate_task_vector_samples")
    wildcard_constraints:
        name=alternatives(TV_EVALUATED),
    conda:
        "../envs/ckptlens.yaml"
    threads: 2
    params:
        evaluate=lambda w: canonical(TV_SAMPLE[w.name]["evaluate"]),
        rows=lambda w: canonical(PLAN.tv_evaluation_rows(w.name)),
        code=get_code("evaluate_task_vector_samples"),
    script:
        "../scripts/evaluate_task_vector_samples.py"


rule plot_task_vector_samples:
    input:
        layout.samples_table("{name}"),
    output:
        report(
            layout.samples_plot("{name}"),
            caption="../report/task_vector_samples.rst",
            category=STUDY,
            subcategory="task vectors: {name}",
            labels={"stage": "task vectors", "figure": "sampled weights"},
        ),
    log:
        layout.task_vector_log("{name}", "plot_task_vector_samples"),
    benchmark:
        layout.task_vector_benchmark("{name}", "plot_task_vector_samples")
    wildcard_constraints:
        name=alternatives(TV_EVALUATED),
    conda:
        "../envs/ckptlens.yaml"
    params:
        settings=lambda w: canonical(PLAN.tv_sample_params(w.name)),
        code=get_code("plot_task_vector_samples"),
    script:
        "../scripts/plot_task_vector_samples.py"
