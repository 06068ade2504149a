"""Weight matrices of a chunk of checkpoints (numpy only)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from pathlib import Path

    from ckptlens.extract.weights import extract_weights
    from ckptlens.store.failures import naming_source, pass_on
    from ckptlens.store.layout import step_name

    src, out = Path(snakemake.input[0]), Path(snakemake.output[0])
    for step in snakemake.params.steps:
        checkpoint, weights = src / step_name(step), out / step_name(step)
        if pass_on([checkpoint], [weights]):  # a failed checkpoint's record goes on
            continue
        with naming_source(checkpoint):
            names = extract_weights(checkpoint, snakemake.params.patterns, weights)
        print(f"step {step}: {len(names)} weight matrices")
