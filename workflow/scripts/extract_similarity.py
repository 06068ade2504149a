"""The similarity terms (CKA to the final checkpoint) of a chunk of checkpoints: the final
checkpoint's activations captured once and held, each checkpoint's compared with them, nothing
but the terms written."""

import json

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.extract.model import extract_chunk

    n = extract_chunk(
        snakemake.input[0],
        dict(snakemake.output.items()),
        snakemake.params.steps,
        json.loads(snakemake.params.targets),
        json.loads(snakemake.params.probe),
        threads=snakemake.threads,
        reference=snakemake.params.reference,
    )
    print(f"{n} checkpoints compared with the final one, {snakemake.params.reference}")
