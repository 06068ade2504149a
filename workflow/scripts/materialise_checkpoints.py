"""A chunk of a fetched source's checkpoints into the results folder — a local safetensors checkpoint
as a reference to the user's files (read in place, never copied), a pickled one converted, hub
revisions downloaded and converted — and the weights digest of each; a checkpoint that cannot be
read becomes a failure record."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import json

    from ckptlens.sources import get_source
    from ckptlens.sources.digests import weights_digest
    from ckptlens.sources.readers import open_checkpoint
    from ckptlens.store.atomic import write_text
    from ckptlens.store.records import digest_record

    run = snakemake.wildcards.run
    spec = snakemake.config["runs"][run]["source"]
    source = get_source(spec["type"])
    files = {int(s): f for s, f in json.loads(snakemake.params.files).items()}
    for note in source.notes(spec):  # what the run leaves out, in the words of `ckptlens layers`
        print(note)
    lines = []
    for step, out in files.items():
        # a checkpoint that cannot be read becomes a failure record; what the run does with it
        # (on_bad_checkpoint) is decided when its table is aggregated
        record = source.materialise(spec, step, out)
        if record is not None:  # a failed checkpoint: no digest, never "identical" to another one
            lines.append(f"{step}\t{digest_record(record)}")
            continue
        with open_checkpoint(out) as ckpt:
            lines.append(f"{step}\t{weights_digest(ckpt.keys, ckpt.get)}")
        print(f"step {step}: {out}")
    write_text(snakemake.output.digests, "".join(f"{line}\n" for line in lines))
