"""Download one Hugging Face revision, convert it to safetensors, remove the download (under
on_bad_checkpoint: skip, a revision whose checkpoint cannot be read becomes a failure record)."""
from pathlib import Path

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.config import on_bad_checkpoint
    from ckptlens.faults import fetch_or_record

    out = Path(snakemake.output[0])
    fetch_or_record(
        snakemake.params.model,
        snakemake.params.revision,
        out,
        download_dir=out.parent.parent / "downloads" / out.stem,
        cache_dir=snakemake.params.cache_dir,
        policy=on_bad_checkpoint(snakemake.config),  # read here, not a param: see import_checkpoint.py
        step=int(snakemake.wildcards.step),
    )
