"""Bring one local checkpoint into the results folder as safetensors (or, under
on_bad_checkpoint: skip, a failure record for a checkpoint that cannot be read)."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.config import on_bad_checkpoint
    from ckptlens.faults import import_or_record

    # The policy is read from the config, not given as a param: switching it must not rerun the
    # import (and everything after it) of every good checkpoint; aggregation re-checks the records.
    import_or_record(snakemake.input[0], snakemake.output[0], on_bad_checkpoint(snakemake.config),
                     step=int(snakemake.wildcards.step))
