"""Accuracy and loss of the weights sampled from the task-vector PCA, next to the base, the fine-tuned
runs and their mean."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import json

    import pandas as pd

    from ckptlens.plots.task_vectors import plot_task_vector_samples

    s = json.loads(snakemake.params.settings)
    title = (
        f"task vectors {snakemake.wildcards.name}: weights sampled from the principal components "
        f"(scale {s['scale']:g}, {s['coupling']} coupling, seed {s['seed']})"
    )
    plot_task_vector_samples(pd.read_csv(snakemake.input[0]), snakemake.output[0], title=title)
