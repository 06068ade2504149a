"""List (and warn about) steps whose checkpoints hold identical weights."""

import re

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.digests import check_identical_steps
    from ckptlens.store.atomic import write_text
    from ckptlens.store.records import is_digest_record

    digests = {int(re.search(r"step(\d+)\.txt$", p).group(1)): open(p).read().strip() for p in snakemake.input}
    digests = {s: d for s, d in digests.items() if not is_digest_record(d)}  # failed steps: no weights
    pairs = check_identical_steps(digests)
    write_text(snakemake.output[0], "step,identical_to_step\n" + "".join(f"{b},{a}\n" for a, b in pairs))
