"""Bring one local checkpoint into the results folder as safetensors."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.importer import import_checkpoint

    import_checkpoint(snakemake.input[0], snakemake.output[0])
