"""One figure per metric: its trajectory per layer over training, with change points marked."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.plots.trajectories import plot_metric_trajectories

    plot_metric_trajectories(
        pd.read_parquet(snakemake.input.table),
        snakemake.output[0],
        events=pd.read_csv(snakemake.input.dynamics),
    )
