"""Activations and/or gradients of one checkpoint (a GPU-tagged job; runs on CPU without one)."""
import json

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import torch

    from ckptlens.extract import extract_model

    torch.set_num_threads(snakemake.threads)
    outputs = dict(snakemake.output.items())
    targets, probe = json.loads(snakemake.params.targets), json.loads(snakemake.params.probe)
    extract_model(snakemake.input[0], targets, probe, outputs)
