"""Hub revisions (ckptlens.sources.hub): pure selection; the download path with a fake
snapshot_download (the rest real); marker-guarded cleanup that never deletes what it did not create;
a bad revision is recorded, a failed download is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptlens.sources.digests import check_identical_steps, digests_of
from ckptlens.sources.hub import (
    ALLOW_PATTERNS,
    MARKER,
    RevisionError,
    cleanup,
    download_revision,
    fetch_revision,
    pythia_steps,
    select_revisions,
)
from ckptlens.sources.readers import open_checkpoint
from ckptlens.store.failures import checkpoint_record
from tests.helpers import figure


# ------------------------------------------------------------------------------ revisions (pure)
def test_pythia_steps_are_the_154_published():
    s = pythia_steps()
    assert len(s) == 154 and len(set(s)) == 154 and s == sorted(s)
    assert s[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert s[-2:] == [142000, 143000]
    assert all(b - a == 1000 for a, b in zip(s[11:], s[12:]))


def test_select_revisions():
    assert select_revisions({"revisions": ["step1000", 0, "step143000"]}) == {
        0: "step0",
        1000: "step1000",
        143000: "step143000",
    }
    assert select_revisions({"revisions": {143000: "main"}}) == {143000: "main"}
    every = select_revisions({"steps": "pythia", "every": 10})
    assert list(every)[:3] == [0, 512, 10000] and list(every)[-1] == 140000 and 143000 not in every and len(every) == 16
    final = select_revisions({"steps": "pythia", "every": 10, "include_final": True})
    assert list(final)[-1] == 143000 and len(final) == 17 and final[143000] == "step143000"
    assert len(select_revisions({"steps": "pythia"})) == 154
    assert select_revisions({"steps": [5, 1, 3], "every": 2}) == {1: "step1", 5: "step5"}
    for bad, msg in [
        ({"revisions": ["main"]}, "no step"),
        ({"steps": "pythia", "every": 0}, "every"),
        ({"revisions": ["step1", 1]}, "twice"),
        ({}, "give"),
        ({"steps": "llama"}, "steps"),
        ({"revisions": [], "steps": "pythia"}, "not both"),
    ]:
        with pytest.raises(RevisionError, match=msg):
            select_revisions(bad)


def test_importing_the_source_touches_no_network_library():
    code = (
        "import sys, ckptlens.sources.hub as h; h.select_revisions({'steps': 'pythia', 'every': 5}); "
        "bad = [m for m in ('huggingface_hub', 'torch', 'transformers', 'requests', 'httpx') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ download path
@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """snapshot_download replaced by a function that writes a tiny saved model into local_dir
    (steps 0 and 1 get the same weights, as a botched upload would)."""
    import huggingface_hub
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    calls = []

    def fake(repo_id, revision=None, allow_patterns=None, local_dir=None, cache_dir=None, **kw):
        calls.append(
            {
                "repo_id": repo_id,
                "revision": revision,
                "allow_patterns": allow_patterns,
                "local_dir": local_dir,
                "cache_dir": cache_dir,
            }
        )
        if repo_id == "nobody/missing":

            class RepositoryNotFoundError(OSError):  # the hub's error's name, without its HTTP response
                pass

            raise RepositoryNotFoundError("404 Client Error: Repository Not Found")
        if repo_id == "flaky/once" and sum(c["repo_id"] == repo_id for c in calls) == 1:
            raise OSError("Connection reset by peer")
        step = int(revision.removeprefix("step"))
        torch.manual_seed(max(step, 1))  # step0 == step1
        cfg = GPTNeoXConfig(
            vocab_size=32,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
            tie_word_embeddings=False,
        )
        GPTNeoXForCausalLM(cfg).save_pretrained(local_dir)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


def test_download_open_digest_cleanup(fake_hub, tmp_path):
    from ckptlens.extract.model import extract_model
    from ckptlens.sources.importer import import_checkpoint

    revs = select_revisions({"revisions": [0, 1, 2]})
    paths = {
        s: download_revision("EleutherAI/pythia-tiny", r, tmp_path / "dl" / r, cache_dir=tmp_path / "cache")
        for s, r in revs.items()
    }
    assert fake_hub[0]["revision"] == "step0" and fake_hub[0]["repo_id"] == "EleutherAI/pythia-tiny"
    assert fake_hub[0]["allow_patterns"] == ALLOW_PATTERNS and fake_hub[0]["local_dir"] == str(
        tmp_path / "dl" / "step0"
    )
    assert {"config.json", "*.safetensors", "pytorch_model*.bin"} <= set(ALLOW_PATTERNS)
    for p in paths.values():
        assert (p / MARKER).is_file()
        with open_checkpoint(p) as ckpt:  # the real loader on the downloaded folder
            assert ckpt.format == "hf_folder" and ckpt.config["model_type"] == "gpt_neox"
    with pytest.warns(UserWarning, match="steps 0 and 1 hold identical weights"):
        assert check_identical_steps(digests_of(paths)) == [(0, 1)]

    # downstream: import to safetensors, then the model extraction reads the config from its metadata
    imported = tmp_path / "step2.safetensors"
    import_checkpoint(paths[2], imported)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(24).reshape(4, 6) % 32)
    out = tmp_path / "a.safetensors"
    extract_model(
        imported,
        {"activations": ["gpt_neox.layers.*"]},
        {"tokens": str(ids), "batch_size": 2, "n_batches": 1},
        {"activations": str(out)},
        device="cpu",
    )
    assert out.is_file()

    # cleanup deletes our folder, never one without the marker
    assert cleanup(paths[0]) is True and not paths[0].exists()
    (paths[1] / MARKER).unlink()
    with pytest.warns(UserWarning, match="not deleted"):
        assert cleanup(paths[1]) is False
    assert (paths[1] / "config.json").is_file()
    forged = tmp_path / "user"
    forged.mkdir()
    (forged / MARKER).write_text(json.dumps({"created_by": "someone else"}))
    (forged / "precious.txt").write_text("x")
    with pytest.warns(UserWarning, match="not deleted"):
        assert cleanup(forged) is False
    assert (forged / "precious.txt").exists()
    assert cleanup(tmp_path / "never-existed") is False


def test_fetch_revision_imports_then_deletes_the_download(fake_hub, tmp_path):
    from ckptlens.extract.hf_model import hf_config_from_metadata

    dst = tmp_path / "results" / "step4.safetensors"
    dl = tmp_path / "downloads" / "step4"
    assert fetch_revision("EleutherAI/pythia-tiny", "step4", dst, dl, delete_after=True) == dst
    assert not dl.exists()
    with open_checkpoint(dst) as ckpt:
        assert ckpt.format == "safetensors" and "embed_out.weight" in ckpt.keys
        cfg = hf_config_from_metadata(ckpt.metadata)
        assert cfg["model_type"] == "gpt_neox" and cfg["num_attention_heads"] == 2
        assert not any(k.startswith("ckptlens_") for k in cfg)
    fetch_revision("EleutherAI/pythia-tiny", "step8", tmp_path / "s8.safetensors", dl, delete_after=False)
    assert (dl / MARKER).is_file()


def test_download_errors_name_model_and_revision(fake_hub, tmp_path, monkeypatch):
    from ckptlens.sources import hub

    monkeypatch.setattr(hub, "DOWNLOAD_BACKOFF_S", 0.0)
    dest = tmp_path / "m"
    with pytest.raises(RevisionError, match=r"nobody/missing@step5: download failed .*Not Found"):
        download_revision("nobody/missing", "step5", dest)
    assert sum(c["repo_id"] == "nobody/missing" for c in fake_hub) == 1  # a missing repository: no retry
    with pytest.warns(UserWarning, match="attempt 1 failed"):
        download_revision("flaky/once", "step2", tmp_path / "flaky")  # a network fault: tried again
    assert sum(c["repo_id"] == "flaky/once" for c in fake_hub) == 2
    assert cleanup(dest) is True  # a failed download is still ours to delete
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(RevisionError, match="did not download"):
        download_revision("EleutherAI/pythia-tiny", "step1", user)
    assert (user / "notes.txt").read_text() == "mine" and not (user / MARKER).exists()


def test_a_bad_hugging_face_revision_is_recorded_but_a_failed_download_is_not(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from ckptlens.sources.hub import RevisionError, fetch_or_record

    def fake(repo_id, revision=None, local_dir=None, **_):
        if revision == "offline":
            raise OSError("Temporary failure in name resolution")
        (Path(local_dir) / "config.json").write_text('{"model_type": "gpt_neox"}')
        (Path(local_dir) / "model.safetensors").write_bytes(b"")  # a truncated upload
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr("ckptlens.sources.hub.DOWNLOAD_BACKOFF_S", 0.0)
    dl = tmp_path / "downloads" / "step8"
    with pytest.warns(RuntimeWarning, match="bad checkpoint org/m@step8"):
        rec = fetch_or_record("org/m", "step8", tmp_path / "b.safetensors", dl, step=8)
    assert rec["file"] == "org/m@step8" and "empty file" in rec["reason"]
    assert checkpoint_record(tmp_path / "b.safetensors") == rec and not dl.exists()  # our download removed
    with pytest.raises(RevisionError, match="download failed"):  # the network is not a bad checkpoint
        fetch_or_record("org/m", "offline", tmp_path / "c.safetensors", tmp_path / "dl2", step=9)
    assert not (tmp_path / "c.safetensors").exists()


def test_cleanup_never_deletes_what_it_did_not_create(tmp_path):
    from ckptlens.sources.hub import MARKER, _write_marker, cleanup

    precious = tmp_path / "user" / "precious.bin"
    precious.parent.mkdir()
    precious.write_text("mine")
    ours = tmp_path / "downloads" / "step5"
    ours.mkdir(parents=True)
    _write_marker(ours, "m", "step5")
    (ours / "link_to_user_file").symlink_to(precious)
    (ours / "link_to_user_dir").symlink_to(precious.parent, target_is_directory=True)
    link = tmp_path / "link_to_ours"
    link.symlink_to(ours, target_is_directory=True)
    with pytest.warns(UserWarning, match="not deleted"):
        assert cleanup(link) is False  # a link to a download folder: refused
    assert ours.exists()
    assert cleanup(ours) is True and not ours.exists()
    assert precious.read_text() == "mine"  # links inside were removed, not followed
    user = tmp_path / "user"
    (user / MARKER).symlink_to(tmp_path / "nowhere")  # a marker that is a link does not count
    with pytest.warns(UserWarning, match="not deleted"):
        assert cleanup(user) is False
    assert precious.exists()
    figure(
        "disk",
        "download cleanup: links to user files, a link to our folder, a forged marker",
        "nothing of the user's deleted",
    )
