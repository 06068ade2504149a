"""Download one Hugging Face revision, convert it to safetensors, remove the download."""
from pathlib import Path

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.huggingface import fetch_revision

    out = Path(snakemake.output[0])
    fetch_revision(
        snakemake.params.model,
        snakemake.params.revision,
        out,
        download_dir=out.parent.parent / "downloads" / out.stem,
        cache_dir=snakemake.params.cache_dir,
        delete_after=True,
    )
