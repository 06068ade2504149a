"""One study figure across runs (its kind and runs come from the config's `figures`)."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import json

    import pandas as pd

    from ckptlens.study_plots import plot_study_figure

    spec = json.loads(snakemake.params.spec)
    inputs = {k: snakemake.input[k] for k in snakemake.input.keys()}

    def per_run(prefix, read):
        return {r: read(inputs[f"{prefix}:{r}"]) for r in spec["runs"] if f"{prefix}:{r}" in inputs}

    plot_study_figure(
        spec,
        snakemake.output[0],
        tables=per_run("table", pd.read_parquet),
        dynamics=per_run("dynamics", pd.read_csv),
        logs=per_run("log", pd.read_csv),
        pca=per_run("pca", pd.read_csv),
        correlation=per_run("correlation", pd.read_csv),
    )
