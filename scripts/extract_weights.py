"""Weight matrices of one checkpoint (numpy only)."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.extract import extract_weights

    names = extract_weights(snakemake.input[0], snakemake.params.patterns, snakemake.output[0])
    print(f"extracted {len(names)} weight matrices")
