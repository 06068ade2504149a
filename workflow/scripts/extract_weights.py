"""Weight matrices of one checkpoint (numpy only)."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.store.failures import naming_source, pass_on

    if not pass_on(snakemake.input, snakemake.output):  # a failed checkpoint's record goes on
        with naming_source(snakemake.input[0]):
            from ckptlens.extract.weights import extract_weights

            names = extract_weights(snakemake.input[0], snakemake.params.patterns, snakemake.output[0])
            print(f"extracted {len(names)} weight matrices")
