"""Activations, gradient statistics and/or the other model extractions of a chunk of checkpoints
from one model, built once (a GPU-tagged job; runs on CPU without one)."""

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
        # what the metrics read (none said: all)
        gradient_statistics=json.loads(snakemake.params.gradient_statistics) or None,
        reference=snakemake.params.reference,  # the final checkpoint, with similarity_terms: with_model
    )
    print(f"{n} checkpoints extracted from one model")
