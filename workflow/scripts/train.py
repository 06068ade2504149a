"""Train one run's model and save its checkpoints (a GPU-tagged job; runs on CPU without one)."""

import json

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import torch

    from ckptlens.sources.trained.train import train_run

    torch.set_num_threads(snakemake.threads)
    spec = json.loads(snakemake.params.source)
    files = {int(s): f for s, f in json.loads(snakemake.params.files).items()}
    train_run(spec, list(files), list(files.values()), snakemake.output.log_csv)
