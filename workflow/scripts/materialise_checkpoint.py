"""Bring one checkpoint of a fetched source into the results folder as safetensors: a local file
imported, a hub revision downloaded and converted (under on_bad_checkpoint: skip, a checkpoint that
cannot be read becomes a failure record)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources import get_source

    run, step = snakemake.wildcards.run, int(snakemake.wildcards.step)
    spec = snakemake.config["runs"][run]["source"]
    # the policy is read from the config (its default filled in by common.smk), not given as a
    # param: switching it must not refetch every good checkpoint; aggregation re-checks the records
    get_source(spec["type"]).materialise(spec, step, snakemake.output[0], snakemake.config["on_bad_checkpoint"])
