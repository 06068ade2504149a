"""The hub source's publishing schemes and offline use (ckptlens.sources.hub): one repository per
checkpoint (``models``), revision lists read from a file (OLMo's revisions.txt, OLMo-2's CSV) with
``match`` / ``every``; ``delete_after`` as documented; the Hugging Face cache read without network;
the retry rules (Retry-After of a 429, no retry of a missing repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptlens import config as ckcfg
from ckptlens.sources import SOURCES, SourceError
from ckptlens.sources.hub import (
    MARKER,
    RevisionError,
    cached_snapshot,
    is_permanent,
    read_revisions_file,
    repo_step,
    retry_after,
    revision_stage,
    select_checkpoints,
    select_revisions,
    with_retries,
)
from ckptlens.store import layout


def test_steps_from_repository_and_stage_names():
    assert repo_step("TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T") == 480000
    assert repo_step("TinyLlama/TinyLlama-1.1B-intermediate-step-50K-105b") == 50000
    assert repo_step("google/multiberts-seed_0-step_20k") == 20000
    assert repo_step("google/multiberts-seed_3") is None
    assert repo_step("org/checkpoint-500") == 500
    assert revision_stage("stage2-ingredient3-step11931-tokens50B") == "stage2-ingredient3"
    assert revision_stage("stage1-step-40000") == "stage1" and revision_stage("step1000") is None


def test_one_repository_per_checkpoint():
    tiny = [
        "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-50K-105b",
    ]
    got = select_checkpoints({"models": tiny})
    assert list(got) == [50000, 480000, 1431000] and got[480000] == (tiny[1], "main")
    assert select_checkpoints({"models": tiny, "every": 2}) == {50000: (tiny[2], "main"), 1431000: (tiny[0], "main")}
    assert select_checkpoints({"models": {0: "google/multiberts-seed_0", 20000: "x/y"}, "revision": "v1"}) == {
        0: ("google/multiberts-seed_0", "v1"),
        20000: ("x/y", "v1"),
    }
    assert select_revisions({"models": tiny[:1]}) == {1431000: "main"}
    assert select_checkpoints({"model": "EleutherAI/pythia-70m", "revisions": ["step8"]}) == {
        8: ("EleutherAI/pythia-70m", "step8")
    }
    for bad, msg in [
        ({"models": ["org/no-step-here"]}, "no step in the name"),
        ({"models": ["a/m-step-1k", "b/m-step_1000"]}, "named twice"),
        ({"models": tiny, "model": "x/y"}, "no model"),
        ({"models": tiny, "steps": [1]}, "not models and steps|no steps"),
    ]:
        with pytest.raises(RevisionError, match=msg):
            select_checkpoints(bad)


def test_revision_lists_from_a_file(tmp_path):
    txt = tmp_path / "revisions.txt"  # OLMo-1's list
    txt.write_text("# OLMo-1B\nstep20000-tokens84B\n\nstep1000-tokens4B\nstep30000-tokens126B\n")
    assert select_revisions({"revisions_file": str(txt)}) == {
        1000: "step1000-tokens4B",
        20000: "step20000-tokens84B",
        30000: "step30000-tokens126B",
    }
    assert list(select_revisions({"revisions_file": str(txt), "every": 2})) == [1000, 30000]
    assert select_revisions({"revisions": ["step0", "step1", "step2", "step3"], "every": 2, "include_final": True}) == {
        0: "step0",
        2: "step2",
        3: "step3",
    }  # every thins a revision list as it thins steps

    csv = tmp_path / "olmo2.csv"  # OLMo-2's lists: stages restart their steps
    csv.write_text(
        "Revision,Step,Tokens\n"
        "stage1-step1000-tokens5B,1000,5B\nstage1-step2000-tokens9B,2000,9B\n"
        "stage2-ingredient1-step1000-tokens50B,1000,50B\n"
    )
    with pytest.raises(RevisionError, match="step 1000 is listed twice.*one run per stage"):
        select_revisions({"revisions_file": str(csv)})
    assert select_revisions({"revisions_file": str(csv), "match": "^stage1-"}) == {
        1000: "stage1-step1000-tokens5B",
        2000: "stage1-step2000-tokens9B",
    }
    assert read_revisions_file(csv)[2] == (1000, "stage2-ingredient1-step1000-tokens50B")
    plain = tmp_path / "plain.csv"  # no header we know: the first column, steps from the names
    plain.write_text("branch_name,created\nstep-125000,2024\nstep-250000,2024\n")
    assert select_revisions({"revisions_file": str(plain)}) == {125000: "step-125000", 250000: "step-250000"}
    for bad, msg in [
        ({"revisions_file": str(tmp_path / "none.txt")}, "cannot be read"),
        ({"revisions_file": str(txt), "match": "^stage9"}, "no revision matches"),
        ({"revisions_file": str(txt), "revisions": ["step1"]}, "give one of"),
    ]:
        with pytest.raises(RevisionError, match=msg):
            select_revisions(bad)


def _config(source: dict) -> dict:
    return {"runs": {"r": {"source": {"type": "huggingface", **source}}}, "metrics": {"frobenius_norm": {}}}


def test_the_schema_takes_the_new_forms(tmp_path):
    txt = tmp_path / "revisions.txt"
    txt.write_text("step0\nstep1000\n")
    for source in (
        {"models": ["google/multiberts-seed_0-step_20k", "google/multiberts-seed_0-step_40k"]},
        {"models": {0: "a/b", 5: "a/c"}, "revision": "main"},
        {"model": "allenai/OLMo-1B-hf", "revisions_file": str(txt), "every": 1, "match": "step"},
    ):
        ckcfg.validate(_config(source))
    assert ckcfg.steps(_config({"model": "m/n", "revisions_file": str(txt)}), "r") == [0, 1000]
    for source in ({"revisions": ["step0"]}, {"model": "a/b", "models": ["a/c-step1"]}):
        with pytest.raises(ckcfg.ConfigError):
            ckcfg.validate(_config(source))
    src = SOURCES["huggingface"]
    assert src.step_params({"models": ["a/m-step-2k"]}, 2000) == {
        "model": "a/m-step-2k",
        "revision": "main",
        "cache_dir": None,
    }
    assert src.checkpoint_bytes({"models": ["TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T"]}) == int(2.2e9)
    with pytest.raises(SourceError):
        src.steps({"models": ["org/no-step"]})


# ------------------------------------------------------------------------------ delete_after
@pytest.fixture
def fake_download(monkeypatch):
    """snapshot_download writing a tiny saved GPT-NeoX into local_dir (the rest of the path real)."""
    import huggingface_hub

    from tests.sources.hub_server import tiny_neox_folder

    calls = []

    def fake(repo_id, revision=None, local_dir=None, **kw):
        calls.append((repo_id, revision, local_dir))
        tiny_neox_folder(Path(local_dir), 0)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


@pytest.mark.parametrize("delete_after", [True, False, None])
def test_delete_after_is_the_sources_setting(fake_download, tmp_path, delete_after):
    spec = {"type": "huggingface", "model": "org/m", "revisions": ["step4"], "cache_dir": str(tmp_path / "cache")}
    if delete_after is not None:
        spec["delete_after"] = delete_after
    src = SOURCES["huggingface"]
    out = tmp_path / "results/runs/r/checkpoints/chunk0/step4.safetensors"
    assert src.materialise(spec, 4, out) is None and out.is_file()
    download = layout.download_dir(out)
    keep = delete_after is False
    assert src.temporary(spec) is (not keep)  # the converted checkpoints: temp() unless kept
    assert download.exists() is keep  # the download: deleted unless kept (it used to be deleted always)
    if keep:
        assert (download / MARKER).is_file() and (download / "config.json").is_file()


# ------------------------------------------------------------------------------ the cache, offline
def _cache_revision(cache: Path, repo: str, revision: str, commit: str, files: dict) -> Path:
    """A revision laid out as huggingface_hub caches it: blobs, a snapshot of links, refs/<revision>."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / f"blob-{commit[:6]}-{name}"
        if data is not None:
            blob.write_bytes(data)
        (snap / name).symlink_to(Path("../../blobs") / blob.name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snap


def test_the_cached_snapshot_is_found_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    good = _cache_revision(cache, "o/m", "step1", "a" * 40, {"config.json": b"{}", "model.safetensors": b"x" * 10})
    assert cached_snapshot("o/m", "step1", cache) == good
    assert cached_snapshot("o/m", "a" * 40, cache) == good  # by commit too
    assert cached_snapshot("o/m", "step2", cache) is None and cached_snapshot("o/other", "step1", cache) is None
    # an interrupted download: the weights' blob never arrived
    _cache_revision(cache, "o/m", "step2", "b" * 40, {"config.json": b"{}", "model.safetensors": None})
    assert cached_snapshot("o/m", "step2", cache) is None
    # a sharded checkpoint missing a shard
    index = json.dumps({"weight_map": {"w1": "model-1.safetensors", "w2": "model-2.safetensors"}}).encode()
    files = {"config.json": b"{}", "model.safetensors.index.json": index, "model-1.safetensors": b"x"}
    _cache_revision(cache, "o/m", "step3", "c" * 40, files)
    assert cached_snapshot("o/m", "step3", cache) is None


def test_offline_without_the_revision_in_the_cache_says_to_fetch(tmp_path, monkeypatch, fake_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"type": "huggingface", "model": "org/m", "revisions": ["step4"], "cache_dir": str(tmp_path / "cache")}
    out = tmp_path / "results/runs/r/checkpoints/chunk0/step4.safetensors"
    with pytest.raises(RevisionError, match="not in the Hugging Face cache .* ckptlens fetch CONFIG"):
        SOURCES["huggingface"].materialise(spec, 4, out)
    assert not fake_download and not out.exists()  # no download tried


# ------------------------------------------------------------------------------ retries
class _Resp:
    def __init__(self, status, headers=None):
        self.status_code, self.headers = status, headers or {}


class _HTTPError(OSError):
    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.response = _Resp(status, headers)


def test_retry_rules(monkeypatch):
    from ckptlens.sources import hub

    assert retry_after(_HTTPError(429, {"Retry-After": "7"})) == 7.0
    assert retry_after(_HTTPError(429)) is None and retry_after(_HTTPError(500, {"Retry-After": "3"})) is None
    assert retry_after(_HTTPError(429, {"Retry-After": "99999"})) == hub.MAX_RETRY_AFTER_S
    try:  # the 429 inside the error snapshot_download raises when it falls back to the cache
        try:
            raise _HTTPError(429, {"Retry-After": "2"})
        except OSError as inner:
            raise FileNotFoundError("LocalEntryNotFound") from inner
    except OSError as outer:
        assert retry_after(outer) == 2.0 and not is_permanent(outer)
    assert is_permanent(_HTTPError(404)) and not is_permanent(_HTTPError(503))

    class RepositoryNotFoundError(OSError):
        pass

    assert is_permanent(RepositoryNotFoundError("nope"))

    slept, calls, said = [], [], []
    monkeypatch.setattr(hub.time, "sleep", slept.append)

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise _HTTPError(429, {"Retry-After": "3"})
        if len(calls) == 2:
            raise ConnectionError("reset")
        return "ok"

    assert with_retries(flaky, "o/m@step1", attempts=3, backoff_s=0.5, log=said.append) == "ok"
    assert slept == [3.0, 1.0] and "rate-limited (HTTP 429)" in said[0] and "attempt 2 of 3" in said[0]
    with pytest.raises(RepositoryNotFoundError):
        with_retries(lambda: (_ for _ in ()).throw(RepositoryNotFoundError("x")), "o/m", attempts=5, log=said.append)
    assert slept == [3.0, 1.0]  # a missing repository: not tried again
