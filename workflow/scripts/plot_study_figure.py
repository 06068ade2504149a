"""One study figure across runs (its kind and runs come from the config's `figures`)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import json

    import pandas as pd

    from ckptlens.plots.studies import plot_study_figure

    spec = json.loads(snakemake.params.spec)
    inputs = {}  # input kind -> {run: table}, from the "<kind>:<run>" keys of the rule's inputs
    for key in snakemake.input.keys():
        what, _, run = key.partition(":")
        path = snakemake.input[key]
        inputs.setdefault(what, {})[run] = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    plot_study_figure(spec, snakemake.output[0], inputs)
