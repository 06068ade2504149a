"""``ckptlens fetch CONFIG`` with huggingface_hub's real download code against a hub on 127.0.0.1
(tests/sources/hub_server.py): revisions resolved to their commits and recorded, the disk said up front,
a rate-limited request (HTTP 429) tried again after its Retry-After, a broken transfer resumed, an
interrupted fetch continued by the next; then, the server stopped and ``HF_HUB_OFFLINE=1``, the
huggingface source materialises every step from the cache (and a step not fetched fails, saying why)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.sources.hub_server import HubServer, hub_env, tiny_neox_folder

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

REPO = "test-org/tiny-neox"
REVISIONS = {"step0": 0, "step1000": 1, "stage1-step2000-tokens8B": 2}
BIG = {"vocab_size": 50304, "hidden_size": 64}
CHUNK = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE
SERIES = {"test-org/tiny-neox-step-1k": 3, "test-org/tiny-neox-step-3k": 4}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    seeds = set(REVISIONS.values()) | set(SERIES.values())
    # step0's weights (26 MB) are larger than huggingface_hub's 10 MiB download chunk, so that a transfer
    # broken after the first chunk resumes from there
    return {seed: tiny_neox_folder(root / f"seed{seed}", seed, **(BIG if seed == 0 else {})) for seed in seeds}


@pytest.fixture
def hub(folders):
    server = HubServer()
    for rev, seed in REVISIONS.items():
        server.add_revision(REPO, rev, folders[seed])
    server.add_revision(REPO, "main", folders[2])
    for repo, seed in SERIES.items():
        server.add_revision(repo, "main", folders[seed])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path):
    cfg = {
        "runs": {
            "neox": {"source": {"type": "huggingface", "model": REPO, "revisions": list(REVISIONS)}},
            "series": {"source": {"type": "huggingface", "models": list(SERIES)}},
        },
        "metrics": {"frobenius_norm": {}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def fetch(project: Path, hub: HubServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ckptlens.cli", "fetch", "config.yaml", "--interval", "0", "--backoff", "0.2", *args],
        cwd=project,
        env=hub_env(hub.url, project / "hf"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fetch_resolves_throttles_resumes_then_the_jobs_read_offline(hub, project, folders):
    hub.fault("GET /api/models/test-org/tiny-neox/revision/step1000", status=429, retry_after="1")
    weights0 = f"GET /{REPO}/resolve/{hub.repos[REPO]['step0']}/model.safetensors"
    hub.fault(weights0, cut_after=CHUNK + 5000)  # the first transfer of step0's weights breaks after a chunk
    r = fetch(project, hub)
    assert r.returncode == 0, r.stdout + r.stderr

    # resolved to commits and recorded; the disk said before the first download
    record = json.loads((project / "results/hub_revisions.json").read_text())
    for rev in REVISIONS:
        step = {"step0": 0, "step1000": 1000, "stage1-step2000-tokens8B": 2000}[rev]
        entry = record["runs"]["neox"][str(step)]
        assert entry["commit"] == hub.repos[REPO][rev] and entry["status"] == "cached" and entry["revision"] == rev
        assert entry["bytes"] == sum(len(b) for b in hub.commits[entry["commit"]].values())
    assert record["runs"]["series"]["3000"]["model"] == "test-org/tiny-neox-step-3k"
    needs = next(line for line in r.stdout.splitlines() if line.startswith("needs "))
    assert r.stdout.index(needs) < r.stdout.index("fetched ") and "for 5 revision(s)" in needs

    # 429: tried again after the Retry-After it asked for, and said so
    asked = hub.requests("GET /api/models/test-org/tiny-neox/revision/step1000")
    assert [x[4] for x in asked[:2]] == [429, 200] and asked[1][0] - asked[0][0] >= 1.0
    assert "rate-limited (HTTP 429)" in r.stderr
    # the broken transfer resumed with a Range request from where it stopped
    ranged = [x[3] for x in hub.requests(weights0)]
    assert ranged == [None, f"bytes={CHUNK}-"]

    # the cache holds exactly what was served
    cache = project / "hf" / "hub" / "models--test-org--tiny-neox"
    for rev, seed in REVISIONS.items():
        assert (cache / "refs" / rev).read_text() == hub.repos[REPO][rev]
        snap = cache / "snapshots" / hub.repos[REPO][rev]
        for f in folders[seed].iterdir():
            assert (snap / f.name).read_bytes() == f.read_bytes()

    # a second fetch finds everything in the cache: nothing downloaded; its requests spaced --interval apart
    n = len(hub.requests("/resolve/"))
    before = len(hub.log)
    r2 = fetch(project, hub, "--interval", "0.3")
    assert r2.returncode == 0 and "needs 0 B" in r2.stdout and len(hub.requests("/resolve/")) == n
    starts = [x[0] for x in hub.log[before:]]
    assert len(starts) == 5 and min(b - a for a, b in zip(starts, starts[1:])) >= 0.28

    # offline, the server gone: the hub source materialises every step from the cache
    hub.stop()
    code = """
import json, sys
from pathlib import Path
from ckptlens.sources import SOURCES
from ckptlens.sources.hub import RevisionError
from ckptlens.sources.readers import open_checkpoint
cfg, out = json.loads(sys.argv[1]), Path(sys.argv[2])
src = SOURCES["huggingface"]
for run, spec in cfg.items():
    for step in src.steps(spec):
        dst = out / run / "checkpoints" / "chunk0" / f"step{step}.safetensors"
        assert src.materialise(spec, step, dst) is None
        with open_checkpoint(dst) as ck:
            w = ck.get("gpt_neox.layers.0.attention.dense.weight")
            print(run, step, float(abs(w).sum()))
        assert not (out / run / "downloads").exists()  # read from the cache, nothing downloaded
try:
    src.materialise(dict(cfg["neox"], revisions=["step5000"]), 5000, out / "x" / "checkpoints" / "c" / "s.safetensors")
except RevisionError as exc:
    print("ERROR", exc)
"""
    specs = {run: c["source"] for run, c in yaml.safe_load((project / "config.yaml").read_text())["runs"].items()}
    off = subprocess.run(
        [sys.executable, "-c", code, json.dumps(specs), str(project / "results/runs")],
        env=hub_env("http://127.0.0.1:9", project / "hf", offline=True),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert off.returncode == 0, off.stdout + off.stderr
    lines = off.stdout.splitlines()
    sums = {(ln.split()[0], int(ln.split()[1])): float(ln.split()[2]) for ln in lines if not ln.startswith("ERROR")}
    assert set(sums) == {("neox", 0), ("neox", 1000), ("neox", 2000), ("series", 1000), ("series", 3000)}
    from safetensors.numpy import load_file

    want = load_file(folders[1] / "model.safetensors")["gpt_neox.layers.0.attention.dense.weight"]
    assert np.isclose(sums[("neox", 1000)], np.abs(want.astype(np.float64)).sum(), rtol=1e-5)
    err = next(ln for ln in lines if ln.startswith("ERROR"))
    assert "not in the Hugging Face cache" in err and "HF_HUB_OFFLINE" in err and "ckptlens fetch" in err


def test_an_interrupted_fetch_continues_and_failures_are_listed(hub, project):
    # one revision's weights cannot be had (a server error every time): the rest is fetched, exit 1
    hub.fault(f"GET /{REPO}/resolve/{hub.repos[REPO]['step1000']}/model.safetensors", status=500, times=-1)
    r = fetch(project, hub, "--attempts", "2", "--run", "neox")
    assert r.returncode == 1 and "test-org/tiny-neox@step1000" in r.stdout and "run the command again" in r.stdout
    record = json.loads((project / "results/hub_revisions.json").read_text())["runs"]["neox"]
    assert {s: e["status"] for s, e in record.items()} == {"0": "cached", "1000": "error", "2000": "cached"}
    assert "download failed" in record["1000"]["error"] and record["1000"]["commit"] == hub.repos[REPO]["step1000"]
    assert "series" not in json.loads((project / "results/hub_revisions.json").read_text())["runs"]

    hub.faults.clear()
    before = len(hub.log)
    r = fetch(project, hub, "--run", "neox")
    assert r.returncode == 0, r.stdout + r.stderr
    fetched = {x[2].split("/resolve/")[1].split("/")[0] for x in hub.log[before:] if "/resolve/" in x[2]}
    assert fetched == {hub.repos[REPO]["step1000"]}  # only what was missing


def test_fetch_refuses_offline_and_missing_revisions_are_not_retried(hub, project):
    env = hub_env(hub.url, project / "hf", offline=True)
    r = subprocess.run(
        [sys.executable, "-m", "ckptlens.cli", "fetch", "config.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "HF_HUB_OFFLINE is set" in r.stderr
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["runs"]["neox"]["source"]["revisions"] = ["step0", "step7000"]
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = fetch(project, hub, "--run", "neox", "--dry-run")
    assert r.returncode == 1 and "step 7000" in r.stdout and "RevisionNotFound" in r.stdout
    assert len(hub.requests("revision/step7000")) == 1  # a missing revision: asked once
    assert not hub.requests("/resolve/")  # a dry run downloads nothing
