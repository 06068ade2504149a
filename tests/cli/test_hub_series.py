"""``ckptlens layers``/``init`` on a series published on the Hugging Face Hub (``hf:ORG/NAME``), with
huggingface_hub's real code against a hub on 127.0.0.1 (tests/sources/hub_server.py): the branches
listed as steps (stages apart, ``main`` skipped), the names and shapes read from the safetensors
header by HTTP range requests (never the weights), the same description as the downloaded folder's,
and a config with the hub source, its revisions and the repository's tokenizer."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ckptlens import config as ckcfg
from ckptlens.cli.init import MAX_HUB_REVISIONS, spread_steps
from ckptlens.sources.hub import pythia_steps
from tests.cli.helpers import run_cli
from tests.sources.hub_server import HubServer, hub_env, tiny_neox_folder

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

REPO = "test-org/tiny-neox"
REVISIONS = {"step0": 0, "step1000": 1, "step3000": 2, "stage1-step2000-tokens8B": 3}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from ckptlens.sources.minilm import MiniLMNotInstalled, minilm_dir

    root = tmp_path_factory.mktemp("published")
    out = {seed: tiny_neox_folder(root / f"seed{seed}", seed) for seed in set(REVISIONS.values())}
    try:
        tok = minilm_dir()
    except MiniLMNotInstalled as exc:
        pytest.skip(str(exc))
    for folder in out.values():  # the repository publishes its tokenizer with every revision
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copy(tok / f, folder / f)
    return out


@pytest.fixture(scope="module")
def hub(folders):
    server = HubServer()
    for rev, seed in REVISIONS.items():
        server.add_revision(REPO, rev, folders[seed])
    server.add_revision(REPO, "main", folders[2])
    server.start()
    yield server
    server.stop()


def _layers(hub, tmp_path, *args, offline=False):
    return run_cli("layers", *args, cwd=tmp_path, env=hub_env(hub.url, tmp_path / "hf", offline=offline))


def test_layers_of_a_hub_series_reads_headers_only_and_says_what_the_folder_says(hub, folders, tmp_path):
    proc = _layers(hub, tmp_path, f"hf:{REPO}")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"series: 3 checkpoints in the branches of {REPO} on the Hugging Face Hub" in text
    assert "steps: 0, 1000, 3000" in text
    assert "skipped: main: no step in the branch name" in text
    assert "note: steps restart in each training stage" in text and "stage1 (1)" in text
    assert f"the names below are those of hf:{REPO}@step3000" in text
    assert "architecture: gpt_neox, 2 heads" in text
    # the weights were never downloaded: every read of a weights file asked for a byte range
    weights = hub.requests("GET /test-org/tiny-neox/resolve/")
    weights = [r for r in weights if r[2].endswith("model.safetensors")]
    assert weights and all(r[3] and r[3].startswith("bytes=") for r in weights), weights
    assert proc.stderr.strip().endswith("NO_TORCH")

    # one revision: the same description as `ckptlens layers` of the folder it was published from
    remote = _layers(hub, tmp_path, f"hf:{REPO}@step1000", "--json")
    local = _layers(hub, tmp_path, str(folders[1]), "--json")
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    r, lo = json.loads(remote.stdout), json.loads(local.stdout)
    assert "series" not in r
    for key in ("architecture", "n_heads", "n_params", "weight_matrices", "attention", "default_targets"):
        assert r[key] == lo[key], key
    assert r["read"].startswith(f"hub {REPO}@step1000: safetensors header by HTTP range + config.json")


def test_layers_of_a_hub_series_offline_reads_the_cache_or_says_to_fetch(hub, folders, tmp_path):
    proc = _layers(hub, tmp_path, f"hf:{REPO}@step1000", offline=True)
    assert proc.returncode != 0
    assert "HF_HUB_OFFLINE is set; `ckptlens fetch CONFIG` downloads it" in proc.stderr, proc.stderr
    listing = _layers(hub, tmp_path, f"hf:{REPO}", offline=True)
    assert listing.returncode != 0 and "listing its revisions needs the network" in listing.stderr
    bad = _layers(hub, tmp_path, "hf:no-slash")
    assert bad.returncode != 0 and "expected hf:ORG/NAME or hf:ORG/NAME@REVISION" in bad.stderr


def test_init_on_a_hub_series_writes_the_hub_source_and_its_tokenizer(hub, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("init", f"hf:{REPO}", cwd=work, env=hub_env(hub.url, tmp_path / "hf"))
    assert proc.returncode == 0, proc.stderr
    text = (work / "config.yaml").read_text()
    cfg = yaml.safe_load(text)
    monkeypatch.chdir(work)  # the config's paths are relative to the folder it runs in
    ckcfg.validate(cfg)
    run = cfg["runs"]["tiny-neox"]
    assert run["source"] == {"type": "huggingface", "model": REPO, "revisions": ["step0", "step1000", "step3000"]}
    assert "skipped: main: no step in the branch name" in text
    assert "stage1 (1)" in text and "`ckptlens fetch <this file>`" in text
    # the repository's tokenizer, beside the config, for the probe
    tok = work / "tokenizers" / "test-org_tiny-neox"
    assert (tok / "tokenizer.json").is_file() and (tok / "vocab.txt").is_file()
    assert run["probe"]["tokenizer"] == "tokenizers/test-org_tiny-neox"
    assert "cka_to_final" in cfg["metrics"]
    assert run["targets"]["weights"][0].startswith("gpt_neox.layers.*.")


def test_spread_steps_keeps_the_first_and_last_and_is_log_spaced():
    steps = pythia_steps()
    got = spread_steps(steps)
    assert len(got) == MAX_HUB_REVISIONS and got[0] == 0 and got[-1] == 143000
    assert got == sorted(set(got)) and set(got) <= set(steps)
    # log-spaced: as many below step 1000 (Pythia's dense early steps) as between 1000 and 143000, roughly
    assert 10 <= sum(s < 1000 for s in got) <= 22
    assert spread_steps([5, 10, 20]) == [5, 10, 20]
