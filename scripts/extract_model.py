"""Activations and/or gradients of one checkpoint (a GPU-tagged job; runs on CPU without one)."""
import json

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.faults import naming_source, pass_on

    if not pass_on(snakemake.input, snakemake.output):  # a failed checkpoint's record goes on
        with naming_source(snakemake.input[0]):
            import torch

            from ckptlens.extract import extract_model
            from ckptlens.io import TensorFile

            torch.set_num_threads(snakemake.threads)
            outputs = dict(snakemake.output.items())
            targets, probe = json.loads(snakemake.params.targets), json.loads(snakemake.params.probe)
            if TensorFile(snakemake.input[0]).metadata.get("ckptlens_arch") in ("toy", "mlp"):
                extract_model(snakemake.input[0], targets, probe, outputs)
            else:  # a Hugging Face model (its config.json travels in the checkpoint's metadata)
                from ckptlens.hf import extract_hf

                extract_hf(snakemake.input[0], None, targets, probe, outputs)
