"""Activations, gradient statistics and/or the other model extractions of a chunk of checkpoints
from one model, built once (a GPU-tagged job; runs on CPU without one)."""

import json

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from pathlib import Path

    from ckptlens.store.failures import pass_on
    from ckptlens.store.layout import step_name

    src = Path(snakemake.input[0])
    outputs = {kind: Path(folder) for kind, folder in snakemake.output.items()}
    todo = []  # (checkpoint, {kind: file}) of the steps that did not fail
    for step in snakemake.params.steps:
        checkpoint = src / step_name(step)
        files = {kind: folder / step_name(step) for kind, folder in outputs.items()}
        if not pass_on([checkpoint], list(files.values())):  # a failed checkpoint's record goes on
            todo.append((checkpoint, files))
    if todo:
        import torch

        from ckptlens.extract.model import extract_models

        torch.set_num_threads(snakemake.threads)
        targets, probe = json.loads(snakemake.params.targets), json.loads(snakemake.params.probe)
        statistics = json.loads(snakemake.params.gradient_statistics) or None  # what the metrics read (none said: all)
        extract_models([c for c, _ in todo], targets, probe, [f for _, f in todo], gradient_statistics=statistics)
        print(f"{len(todo)} checkpoints extracted from one model")
    for folder in outputs.values():
        folder.mkdir(parents=True, exist_ok=True)  # a chunk of failed steps only still has its folder
