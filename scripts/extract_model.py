"""Activations and/or gradients of one checkpoint (a GPU-tagged job; runs on CPU without one)."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import torch

    from ckptlens.extract import extract_model

    torch.set_num_threads(snakemake.threads)
    outputs = {k: snakemake.output[k] for k in ("activations", "gradients") if hasattr(snakemake.output, k)}
    extract_model(snakemake.input[0], snakemake.params.targets, snakemake.params.probe, outputs)
