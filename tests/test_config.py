"""Invalid configs fail before any job runs, with a message naming the key."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_helpers import REPO, finetune_minilm

from ckptlens.config import ConfigError, validate
from tests.helpers import _tiny_checkpoint


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_the_demo_config_is_valid(demo):
    validate(demo)
    for policy in ("fail", "skip"):
        validate({**demo, "on_bad_checkpoint": policy})


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["metrics"].update(effective_rnak={}), "metrics.effective_rnak"),
        (lambda c: c["metrics"].update(proportional_effective_rank={"q": 1}), "metrics.proportional_effective_rank.q"),
        (lambda c: c["runs"]["demo"]["targets"].update(weights=["blocks.*.mlp.*"]), "runs.demo.targets.weights[0]"),
        (
            lambda c: c["runs"]["demo"]["targets"].update(activations=["blocks.*", "layers.*"]),
            "runs.demo.targets.activations[1]",
        ),
        (lambda c: c["runs"]["demo"]["source"]["train"].update(steps="many"), "runs.demo.source.train.steps"),
        (lambda c: c["runs"]["demo"]["source"].pop("train"), "runs.demo.source"),
        (lambda c: c["runs"]["demo"].update(colour="red"), "runs.demo"),
        (lambda c: c.pop("metrics"), "metrics"),
        (lambda c: c["runs"]["demo"]["source"]["train"].update(save_steps=[]), "runs.demo.source.train.save_steps"),
        (lambda c: c["runs"]["demo"]["source"]["train"].update(save_steps=[0, 5000]), "runs.demo.source.train"),
        (lambda c: c["runs"].update({"../escape": c["runs"]["demo"]}), "runs"),
        (
            lambda c: c["analysis"]["correlation_pairs"].append(["cka_to_final", "stable_rank"]),
            "analysis.correlation_pairs[4]",
        ),
        (
            lambda c: c["analysis"]["correlation_pairs"].append(["cka_to_final", "effective_rank.k8"]),
            "analysis.correlation_pairs[4]",
        ),
        (lambda c: c.update(on_bad_checkpoint="ignore"), "on_bad_checkpoint"),
        (lambda c: c.update(on_bad_checkpoint=True), "on_bad_checkpoint"),
        (lambda c: c.update(task_vectors={"../../x": {"base_run": "demo", "runs": ["demo", "demo"]}}), "task_vectors"),
    ],
)
def test_invalid_config_names_the_key(demo, mutate, key):
    cfg = copy.deepcopy(demo)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert f"config key '{key}'" in str(err.value)


def test_correlation_pairs_may_name_one_value_of_a_multi_valued_metric(demo):
    cfg = copy.deepcopy(demo)
    cfg["metrics"]["activation_pca_evr"] = {}
    cfg["metrics"]["consecutive_cosine"] = {"quantiles": [0.1, 0.9]}
    cfg["analysis"]["correlation_pairs"] += [
        ["cka_to_final", "activation_pca_evr.pc1"],
        ["consecutive_cosine.p10", "consecutive_cosine.mean"],
    ]
    validate(cfg)


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "consecutive_cosine",
            "metric 'consecutive_cosine' gives several values; name one of consecutive_cosine.mean, "
            "consecutive_cosine.p10, consecutive_cosine.p90",
        ),
        (
            "consecutive_cosine.p50",
            "'consecutive_cosine.p50' is not a value of metric 'consecutive_cosine' (its values: "
            "consecutive_cosine.mean, consecutive_cosine.p10, consecutive_cosine.p90)",
        ),
        ("cka_to_final.mean", "'cka_to_final.mean' is not a value of metric 'cka_to_final' (it gives one value"),
        ("qk_ov_overlap_max", "name one of qk_ov_overlap_max.k2, qk_ov_overlap_max.k2_random"),
    ],
)
def test_a_metric_value_that_no_row_will_carry_is_refused(demo, name, message):
    cfg = copy.deepcopy(demo)
    cfg["metrics"]["consecutive_cosine"] = {"quantiles": [0.1, 0.9]}
    cfg["metrics"]["qk_ov_overlap_max"] = {"ks": [2]}
    cfg["runs"]["demo"]["targets"]["weights"].append("blocks.*.attn.head*.qk")
    cfg["runs"]["demo"]["targets"]["weights"].append("blocks.*.attn.head*.ov")
    bad = copy.deepcopy(cfg)
    bad["analysis"]["correlation_pairs"].append(["cka_to_final", name])
    with pytest.raises(ConfigError, match=r"config key 'analysis.correlation_pairs\[4\]'") as err:
        validate(bad)
    assert message in str(err.value)
    cfg["figures"] = {"f": {"kind": "compare", "runs": ["demo"], "metric": name}}
    with pytest.raises(ConfigError, match=r"config key 'figures.f.metric'"):
        validate(cfg)


def test_local_source_without_checkpoints(tmp_path, demo):
    cfg = copy.deepcopy(demo)
    cfg["runs"]["demo"]["source"] = {"type": "local", "path": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"runs.demo.source.path.*no checkpoints found"):
        validate(cfg)


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
    """A folder holding what the MiniLM examples expect under data/minilm (the real step-0 checkpoints
    of three seeds, the tokenizer and the probes, as examples/minilm/finetune.py writes them) and the
    Llama example under data/llama_gqa, the ViT example under data/vit_digits."""
    root = tmp_path_factory.mktemp("examples")
    finetune_minilm(root / "data" / "minilm", (0, 1, 2), head_seed=0, steps=0)
    # the Llama example's series, as examples/llama/train.py writes it (two steps suffice to validate)
    spec = importlib.util.spec_from_file_location("llama_train", REPO / "examples" / "llama" / "train.py")
    llama_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(llama_train)
    llama_train.train(root / "data" / "llama_gqa", steps=2, save_every=1)
    # the ViT example's fine-tunes, as examples/vit_digits/finetune.py writes them (two steps)
    spec = importlib.util.spec_from_file_location("vit_finetune", REPO / "examples" / "vit_digits" / "finetune.py")
    vit_finetune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vit_finetune)
    out = root / "data" / "vit_digits"
    vit_finetune.main(["--out", str(out), "--pretrain-steps", "1", "--steps", "2", "--save-every", "1"])
    return root


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_config_is_valid(example, monkeypatch, request):
    """Every example validates as shipped, without network: the data its own steps generate
    (data/minilm) is made for real beside it; a table's file ships in ../shared."""
    text = example.read_text()
    cfg = yaml.safe_load(text)
    if any(d in text for d in ("data/minilm", "data/llama_gqa", "data/vit_digits")):
        # relative paths, as in the README's commands: validate from a folder that has data/minilm
        monkeypatch.chdir(request.getfixturevalue("example_data"))
    if example.name == "pythia_table.yaml":
        shared = REPO.parent / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"
        if not shared.exists():
            pytest.skip(f"the shared Pythia data is not at {shared}")
        monkeypatch.chdir(REPO)
    if example.name == "pythia_hf.yaml":
        # its probe is the token file its header says how to make: named when it is missing
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
        with pytest.raises(ConfigError, match=r"probe\.tokens': no such file 'data/pythia_probe\.npy'"):
            validate(cfg)
        (Path("data")).mkdir()
        np.save("data/pythia_probe.npy", np.zeros((8, 16), dtype=np.int64))
    validate(cfg)
    if example.name == "pythia_hf.yaml":
        from ckptlens.config import steps

        assert all(len(steps(cfg, run)) == 27 for run in cfg["runs"])


def test_targets_of_a_save_pretrained_folder_are_checked_before_any_job(example_data, monkeypatch):
    """A local source of Hugging Face folders (model.safetensors) is checked from the header, like a file."""
    monkeypatch.chdir(example_data)
    cfg = yaml.safe_load((REPO / "examples" / "linearity.yaml").read_text())
    cfg["runs"]["minilm_linearity"]["targets"]["chain"] = ["bert.embeddings", "bert.encodr.layer.*"]
    with pytest.raises(
        ConfigError, match=r"runs.minilm_linearity.targets.chain\[1\].*'bert.encodr.layer.\*' matches no module"
    ):
        validate(cfg)


def _local_run(tmp_path, n_steps, size_bytes, **run):
    folder = tmp_path / "ck"
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_steps):
        with open(folder / f"step_{s * 10}.pt", "wb") as fh:
            fh.truncate(size_bytes)  # sparse: only the size counts
    return {"runs": {"r": {"source": {"type": "local", "path": str(folder)}, **run}}, "metrics": {"frobenius_norm": {}}}


def test_jobs_are_sized_to_the_checkpoints():
    from ckptlens.config import CHECKPOINT_BYTES_PER_JOB, MAX_CHECKPOINTS_PER_JOB, checkpoints_per_job

    toy = {
        "runs": {
            "t": {"source": {"type": "train_toy", "model": {"d_model": 64, "vocab_size": 64}, "train": {"steps": 100}}}
        }
    }
    assert checkpoints_per_job(toy, "t") == MAX_CHECKPOINTS_PER_JOB  # a tiny model: as many as allowed
    hub = {
        "runs": {
            m: {"source": {"type": "huggingface", "model": f"EleutherAI/{m}", "steps": "pythia"}}
            for m in ("pythia-70m", "pythia-410m", "pythia-2.8b", "mystery")
        }
    }
    # from the size in the model's name (float16 on the hub): 2 GiB / 140 MB, / 820 MB; 2.8b: one each
    assert checkpoints_per_job(hub, "pythia-70m") == CHECKPOINT_BYTES_PER_JOB // int(2 * 70e6) == 15
    assert checkpoints_per_job(hub, "pythia-410m") == 2
    assert checkpoints_per_job(hub, "pythia-2.8b") == 1 and checkpoints_per_job(hub, "mystery") == 1


def test_chunks_are_stable_as_steps_are_added_and_metric_parts_group_them(tmp_path):
    from ckptlens.config import MIN_METRIC_CHECKPOINTS_PER_JOB, checkpoints_per_job, chunks, metric_parts

    cfg = _local_run(tmp_path, 7, 1 << 30)  # 1 GiB files: two per job
    assert checkpoints_per_job(cfg, "r") == 2
    assert chunks(cfg, "r") == [[0, 10], [20, 30], [40, 50], [60]]
    (tmp_path / "ck" / "step_70.pt").write_bytes(b"\0")
    assert chunks(cfg, "r") == [[0, 10], [20, 30], [40, 50], [60, 70]]  # only the last chunk changed
    assert metric_parts(cfg, "r") == [[0, 1, 2, 3]]  # metric jobs carry at least 32 checkpoints
    cfg["runs"]["r"]["checkpoints_per_job"] = 1
    assert len(chunks(cfg, "r")) == 8 and metric_parts(cfg, "r") == [list(range(8))]
    assert MIN_METRIC_CHECKPOINTS_PER_JOB == 32
    many = _local_run(tmp_path / "m", 70, 1, checkpoints_per_job=8)
    parts = metric_parts(many, "r")
    assert [len(p) for p in parts] == [4, 4, 1] and sum(parts, []) == list(range(9))


def test_checkpoints_per_job_is_checked(tmp_path):
    cfg = _local_run(tmp_path, 2, 8, checkpoints_per_job=0)
    with pytest.raises(ConfigError, match="runs.r.checkpoints_per_job"):
        validate(cfg)


def test_parse_time_checks_skip_a_corrupt_first_checkpoint(tmp_path):
    from ckptlens.config import ConfigError, layer_names

    (tmp_path / "ckpt_0.safetensors").write_bytes(b"")
    (tmp_path / "ckpt_1.safetensors").write_bytes(b"<html>404</html>")
    cfg = {"runs": {"r": {"source": {"type": "local", "path": str(tmp_path)}}}, "metrics": {"frobenius_norm": {}}}
    with pytest.raises(ConfigError, match=r"config key 'runs.r.source.path': no checkpoint can be read"):
        layer_names(cfg, "r")
    _tiny_checkpoint(tmp_path / "ckpt_2.safetensors")
    assert layer_names(cfg, "r")["weights"] == ["a"]  # the bad files are their own jobs' business


def test_probe_kind_must_fit_the_model_before_any_job(tmp_path):
    """An image probe on a language model, a token probe on a ViT, unreadable images: one error
    naming the key (and the file), when the config is read."""
    transformers = pytest.importorskip("transformers")
    vit_cfg = transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8, patch_size=4
    )
    transformers.ViTForImageClassification(vit_cfg).save_pretrained(tmp_path / "vit" / "checkpoint-1")
    bert_cfg = transformers.BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=30
    )
    transformers.BertModel(bert_cfg).save_pretrained(tmp_path / "bert" / "checkpoint-1")
    np.save(tmp_path / "ids.npy", np.zeros((4, 5), np.int64))
    np.save(tmp_path / "images.npy", np.zeros((4, 8, 8, 3), np.uint8))
    np.save(tmp_path / "bad.npy", np.zeros((4, 5), np.uint8))

    def cfg(model, **probe):
        return {
            "runs": {"r": {"source": {"type": "local", "path": str(tmp_path / model)}, "probe": probe}},
            "metrics": {"cka_to_final": {}},
        }

    validate(cfg("vit", images=str(tmp_path / "images.npy")))
    validate(cfg("bert", tokens=str(tmp_path / "ids.npy")))
    with pytest.raises(ConfigError, match=r"'runs.r.probe.tokens': a token probe .*ids.npy.* on a 'vit' vision model"):
        validate(cfg("vit", tokens=str(tmp_path / "ids.npy")))
    with pytest.raises(ConfigError, match=r"'runs.r.probe.images': an image probe .*images.npy.* on a 'bert' model"):
        validate(cfg("bert", images=str(tmp_path / "images.npy")))
    with pytest.raises(ConfigError, match=r"'runs.r.probe.images': .*bad.npy: probe images must be"):
        validate(cfg("vit", images=str(tmp_path / "bad.npy")))
    with pytest.raises(ConfigError, match=r"'runs.r.probe.images': no such file or folder"):
        validate(cfg("vit", images=str(tmp_path / "none.npy")))
