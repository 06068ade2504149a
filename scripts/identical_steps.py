"""List (and warn about) steps whose checkpoints hold identical weights."""
import re

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.faults import is_record_digest
    from ckptlens.io import atomic_path
    from ckptlens.sources.huggingface import check_identical_steps

    digests = {int(re.search(r"step(\d+)\.txt$", p).group(1)): open(p).read().strip() for p in snakemake.input}
    digests = {s: d for s, d in digests.items() if not is_record_digest(d)}  # failed steps: no weights
    pairs = check_identical_steps(digests)
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text("step,identical_to_step\n" + "".join(f"{b},{a}\n" for a, b in pairs))
