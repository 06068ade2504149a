"""Training curves: loss and in-/out-of-distribution error."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.plots import plot_training_curves

    plot_training_curves(pd.read_csv(snakemake.input[0]), snakemake.output[0])
