"""SHA-256 of one checkpoint's weights (names, dtypes, shapes, bytes), read one tensor at a time."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.faults import checkpoint_record, digest_of_record
    from ckptlens.io import atomic_path

    record = checkpoint_record(snakemake.input[0])
    if record is not None:  # a failed checkpoint: no digest, never "identical" to another one
        digest = digest_of_record(record)
    else:
        from ckptlens.checkpoint_io import open_checkpoint
        from ckptlens.sources.local import weights_digest

        with open_checkpoint(snakemake.input[0]) as ckpt:
            digest = weights_digest(ckpt.keys, ckpt.get)
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text(digest + "\n")
