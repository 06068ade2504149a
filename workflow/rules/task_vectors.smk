# Task vectors across runs that share a base (fine-tuning seeds): PCA per layer across runs.


rule task_vectors:
    input:
        unpack(get_task_vector_inputs),
    output:
        table="results/task_vectors/{name}/task_vectors.csv",
    log:
        "results/task_vectors/{name}/task_vectors.log",
    params:
        n_components=lambda w: TASK_VECTORS[w.name].get("n_components", 3),
    script:
        "../../scripts/task_vectors.py"


rule plot_task_vectors:
    input:
        "results/task_vectors/{name}/task_vectors.csv",
    output:
        report(
            "results/task_vectors/{name}/task_vectors.png",
            caption="../report/task_vectors.rst",
            category="task vectors",
        ),
    log:
        "results/task_vectors/{name}/plot.log",
    script:
        "../../scripts/plot_task_vectors.py"
