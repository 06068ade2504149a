"""Training curves: loss and in-/out-of-distribution error."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.plots.training import plot_training_curves

    plot_training_curves(pd.read_csv(snakemake.input[0]), snakemake.output[0])
