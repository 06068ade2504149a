"""Job logs (ckptlens.store.joblog): a job missing a package logs one line."""

from __future__ import annotations

import sys

import pytest


def test_a_job_missing_a_package_logs_one_line(tmp_path, monkeypatch):
    """Inside a workflow job (extraction of a Hugging Face model, a hub download) the missing
    package is checked before any work and the job log ends with one line, no traceback."""
    from ckptlens.extract.hf_model import HFModel, load_tokenizer
    from ckptlens.sources.hub import download_revision
    from ckptlens.store.joblog import job_log
    from ckptlens.store.requires import MissingDependency

    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependency, match="needs the Python package transformers"):
        HFModel(tmp_path / "no-such-checkpoint.safetensors")  # before the checkpoint is read
    with pytest.raises(MissingDependency, match="tokenizing the probe text needs the Python package transformers"):
        load_tokenizer(tmp_path)
    with pytest.raises(MissingDependency, match="huggingface source .* needs the Python package huggingface_hub"):
        download_revision("EleutherAI/pythia-14m", "step0", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()  # nothing made

    log = tmp_path / "logs" / "job.log"
    with pytest.raises(SystemExit) as exit_:
        with job_log(log):
            print("started")
            HFModel(tmp_path / "step1.safetensors")
    assert exit_.value.code == 1
    lines = log.read_text().splitlines()
    assert lines[0] == "started" and len(lines) == 2 and "Traceback" not in log.read_text()
    assert lines[1].startswith("ERROR: building a Hugging Face model for activations, gradients or attentions needs")
