"""List (and warn about) steps whose checkpoints hold identical weights."""
import re

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.io import atomic_path
    from ckptlens.sources.huggingface import check_identical_steps

    digests = {int(re.search(r"step(\d+)\.txt$", p).group(1)): open(p).read().strip() for p in snakemake.input}
    pairs = check_identical_steps(digests)
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text("step,identical_to_step\n" + "".join(f"{b},{a}\n" for a, b in pairs))
