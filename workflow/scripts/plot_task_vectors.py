"""The task-vector PCA per layer against depth."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.plots.task_vectors import plot_task_vectors

    name = snakemake.wildcards.name
    plot_task_vectors(pd.read_csv(snakemake.input[0]), snakemake.output[0], title=f"task-vector PCA per layer: {name}")
