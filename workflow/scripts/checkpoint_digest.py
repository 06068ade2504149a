"""SHA-256 of one checkpoint's weights (names, dtypes, shapes, bytes), read one tensor at a time."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.digests import weights_digest
    from ckptlens.sources.readers import open_checkpoint
    from ckptlens.store.atomic import write_text
    from ckptlens.store.failures import checkpoint_record
    from ckptlens.store.records import digest_record

    record = checkpoint_record(snakemake.input[0])
    if record is not None:  # a failed checkpoint: no digest, never "identical" to another one
        digest = digest_record(record)
    else:
        with open_checkpoint(snakemake.input[0]) as ckpt:
            digest = weights_digest(ckpt.keys, ckpt.get)
    write_text(snakemake.output[0], digest + "\n")
