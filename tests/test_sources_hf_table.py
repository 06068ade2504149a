"""Hub revisions (pure selection; download path with a fake snapshot_download, the rest real),
identical-step warnings, marker-guarded cleanup, and the external metrics table on real Pythia data."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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
from ckptlens.sources.table import TableError, load_table

PYTHIA_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"


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
    from ckptlens.sources.readers import open_checkpoint

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
    from ckptlens.sources.readers import open_checkpoint

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


def test_identical_steps_groups():
    with pytest.warns(UserWarning) as rec:
        pairs = check_identical_steps({4: "b", 0: "a", 2: "a", 8: "a", 16: "c"})
    assert pairs == [(0, 2), (0, 8)] and len(rec) == 2
    assert check_identical_steps({0: "a", 1: "b"}) == []


# ------------------------------------------------------------------------------ external table
needs_table = pytest.mark.skipif(not PYTHIA_TABLE.is_file(), reason=f"{PYTHIA_TABLE} not available")


@needs_table
def test_pythia_table_rows_per_model_and_values():
    df = load_table(PYTHIA_TABLE)
    assert list(df.columns) == ["run", "step", "layer", "metric", "value"]
    # 27 steps x 4 metrics x 3 modules x n_layers
    assert df.groupby("run").size().to_dict() == {
        "pythia-70m-deduped": 1944,
        "pythia-160m-deduped": 3888,
        "pythia-410m-deduped": 7776,
        "pythia-1.4b-deduped": 7776,
        "pythia-2.8b-deduped": 10368,
    }
    raw = pd.read_csv(PYTHIA_TABLE)
    assert len(df) == len(raw) == 31752
    np.testing.assert_array_equal(df["value"].to_numpy(), raw["value"].to_numpy())  # not a value changed
    assert (df["run"].to_numpy() == raw["model"].to_numpy()).all()


@needs_table
def test_pythia_table_filters():
    raw = pd.read_csv(PYTHIA_TABLE)
    sub = load_table(
        PYTHIA_TABLE,
        runs="pythia-70m-deduped",
        layers=["gpt_neox.layers.*.attention.dense"],
        metrics=["cka_scores", "grad_sim"],
    )
    assert len(sub) == 6 * 2 * 27
    assert set(sub["layer"]) == {f"gpt_neox.layers.{i}.attention.dense" for i in range(6)}
    want = raw[
        (raw.model == "pythia-70m-deduped")
        & raw.layer.str.endswith(".attention.dense")
        & raw.metric.isin(["cka_scores", "grad_sim"])
    ]
    np.testing.assert_array_equal(sub["value"].to_numpy(), want["value"].to_numpy())
    rx = load_table(PYTHIA_TABLE, runs=["pythia-160m-deduped"], layers=[r"re:layers\.(0|11)\.mlp"])
    assert set(rx["layer"]) == {"gpt_neox.layers.0.mlp.dense_4h_to_h", "gpt_neox.layers.11.mlp.dense_4h_to_h"}
    assert len(rx) == 2 * 4 * 27
    assert len(load_table(PYTHIA_TABLE, runs="pythia-70m-deduped", layers=["**.query_key_value"])) == 6 * 4 * 27
    with pytest.raises(TableError, match=r"no run named \['pythia-7b'\]"):
        load_table(PYTHIA_TABLE, runs=["pythia-7b"])
    with pytest.raises(TableError, match="match no layer"):
        load_table(PYTHIA_TABLE, layers=["layers.*"])  # '*' stays within one dotted component


def test_table_formats_and_errors(tmp_path):
    df = pd.DataFrame(
        {
            "run": ["a", "a", "b"],
            "step": [0, 10, 0],
            "layer": ["l.0", "l.1", "l.0"],
            "metric": ["m"] * 3,
            "value": [1.0, 2.5, np.nan],
        }
    )
    df.to_parquet(tmp_path / "t.parquet")
    got = load_table(tmp_path / "t.parquet", runs=["a"])
    assert got["value"].tolist() == [1.0, 2.5] and got["step"].dtype == np.int64
    assert np.isnan(load_table(tmp_path / "t.parquet", runs="b")["value"][0])
    df.drop(columns=["value"]).to_csv(tmp_path / "novalue.csv", index=False)
    with pytest.raises(TableError, match=r"novalue\.csv: missing column\(s\) value"):
        load_table(tmp_path / "novalue.csv")
    df.drop(columns=["run"]).to_csv(tmp_path / "norun.csv", index=False)
    with pytest.raises(TableError, match=r"norun\.csv: missing column\(s\) run \(or model\)"):
        load_table(tmp_path / "norun.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(TableError, match="unsupported"):
        load_table(tmp_path / "x.json")
    with pytest.raises(TableError, match="does not exist"):
        load_table(tmp_path / "nope.csv")
