"""A cluster without internet, end to end: ``ckptlens fetch`` downloads the revisions from a hub on
127.0.0.1 with huggingface_hub's real download code (as on a login node), the server is stopped, and the
whole workflow runs with ``HF_HUB_OFFLINE=1`` (as on the compute nodes): every step is read from the
Hugging Face cache, nothing is downloaded, the cache is left as it was."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import copy_project, snakemake

from tests.sources.hub_server import HubServer, hub_env, tiny_neox_folder

REPO = "test-org/tiny-neox"


def test_fetch_on_the_login_node_then_the_workflow_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("transformers")
    hub = HubServer()
    folders = {}
    for seed, rev in enumerate(["step0", "step1000", "stage1-step2000-tokens8B"]):
        folders[rev] = tiny_neox_folder(tmp_path / "published" / rev, seed)
        hub.add_revision(REPO, rev, folders[rev])
    hub.start()
    project = copy_project(tmp_path / "p")
    layer = "gpt_neox.layers.1.attention.query_key_value"
    cfg = {
        "runs": {
            "neox": {
                "source": {"type": "huggingface", "model": REPO, "revisions": list(folders)},
                "targets": {"weights": [layer]},
            }
        },
        "metrics": {"frobenius_norm": {}},
    }
    (project / "hub.yaml").write_text(yaml.safe_dump(cfg))
    hf_home = tmp_path / "hf"
    try:
        r = subprocess.run(
            [sys.executable, "-m", "ckptlens.cli", "fetch", "hub.yaml", "--interval", "0"],
            cwd=project,
            env=hub_env(hub.url, hf_home) | {"PYTHONPATH": str(project / "src")},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        hub.stop()
    cache = hf_home / "hub" / "models--test-org--tiny-neox"
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))

    for k, v in hub_env("http://127.0.0.1:9", hf_home, offline=True).items():
        if k.startswith("HF_"):
            monkeypatch.setenv(k, v)
    # the run's metrics table: every step fetched, converted and extracted offline
    snakemake(project, "results/runs/neox/metrics.parquet", "--cores", "2", "--configfile", "hub.yaml")

    run = project / "results/runs/neox"
    t = pd.read_parquet(run / "metrics.parquet")
    assert sorted(t["step"].unique()) == [0, 1000, 2000]
    from safetensors.numpy import load_file

    w = load_file(folders["step1000"] / "model.safetensors")[f"{layer}.weight"].astype(np.float64)
    got = t.query(f"step == 1000 and layer == '{layer}' and metric == 'frobenius_norm'")["value"].item()
    assert got == pytest.approx(np.linalg.norm(w), rel=1e-5)
    assert not (run / "downloads").exists()  # read from the cache: nothing downloaded
    assert not list((run / "checkpoints").rglob("*.safetensors"))  # delete_after: converted copies are temp()
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before  # the cache is not touched
