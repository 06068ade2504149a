"""Activations and/or gradients of one checkpoint (a GPU-tagged job; runs on CPU without one)."""

import json

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.store.failures import naming_source, pass_on

    if not pass_on(snakemake.input, snakemake.output):  # a failed checkpoint's record goes on
        with naming_source(snakemake.input[0]):
            import torch

            from ckptlens.extract.model import extract_model

            torch.set_num_threads(snakemake.threads)
            targets, probe = json.loads(snakemake.params.targets), json.loads(snakemake.params.probe)
            extract_model(snakemake.input[0], targets, probe, dict(snakemake.output.items()))
