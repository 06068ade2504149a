"""List (and warn about) steps whose checkpoints hold identical weights."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.digests import check_identical_steps
    from ckptlens.store.atomic import write_text
    from ckptlens.store.records import is_digest_record

    digests = {}
    for path in snakemake.input:  # one "<step>\t<digest>" line per checkpoint of a chunk
        for line in open(path).read().splitlines():
            step, _, digest = line.partition("\t")
            if not is_digest_record(digest):  # failed steps: no weights
                digests[int(step)] = digest
    pairs = check_identical_steps(digests)
    write_text(snakemake.output[0], "step,identical_to_step\n" + "".join(f"{b},{a}\n" for a, b in pairs))
