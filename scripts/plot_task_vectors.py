"""Explained variance of the task vectors' principal components per layer."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.plots import plot_task_vectors

    plot_task_vectors(pd.read_csv(snakemake.input[0]), snakemake.output[0])
