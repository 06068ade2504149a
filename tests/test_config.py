"""Invalid configs fail before any job runs, with a message naming the key."""

import copy

import pytest
import yaml

from ckptlens.config import ConfigError, validate
from workflow_helpers import REPO


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config.yaml").read_text())


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
        (lambda c: c["runs"]["demo"]["targets"].update(activations=["blocks.*", "layers.*"]), "runs.demo.targets.activations[1]"),
        (lambda c: c["runs"]["demo"]["source"]["train"].update(steps="many"), "runs.demo.source.train.steps"),
        (lambda c: c["runs"]["demo"]["source"].pop("train"), "runs.demo.source"),
        (lambda c: c["runs"]["demo"].update(colour="red"), "runs.demo"),
        (lambda c: c.pop("metrics"), "metrics"),
        (lambda c: c["runs"]["demo"]["source"]["train"].update(save_steps=[]), "runs.demo.source.train.save_steps"),
        (lambda c: c["runs"]["demo"]["source"]["train"].update(save_steps=[0, 5000]), "runs.demo.source.train"),
        (lambda c: c["runs"].update({"../escape": c["runs"]["demo"]}), "runs"),
        (lambda c: c["analysis"]["correlation_pairs"].append(["cka_to_final", "stable_rank"]), "analysis.correlation_pairs[4]"),
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


def test_local_source_without_checkpoints(tmp_path, demo):
    cfg = copy.deepcopy(demo)
    cfg["runs"]["demo"]["source"] = {"type": "local", "path": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"runs.demo.source.path.*no checkpoints found"):
        validate(cfg)


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_config_is_valid(example, monkeypatch):
    """Configs validate without network or data (paths to data they generate need not exist yet,
    except a table's file, which ships in ../shared)."""
    cfg = yaml.safe_load(example.read_text())
    if example.name == "minilm.yaml":
        for run in cfg["runs"].values():  # its checkpoints are made by examples/minilm/finetune.py
            run["source"] = {"type": "train_mlp", "train": {"steps": 10}}
            run["targets"] = {"weights": ["blocks.*.linear"], "activations": ["blocks.*"], "gradients": ["blocks.*.linear"]}
            run["metrics"] = ["frobenius_norm", "cka_to_final", "gradient_norm"]
    if example.name == "pythia_table.yaml":
        shared = REPO.parent / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"
        if not shared.exists():
            pytest.skip(f"the shared Pythia data is not at {shared}")
        monkeypatch.chdir(REPO)
    validate(cfg)
    if example.name == "pythia_hf.yaml":
        from ckptlens.config import steps

        assert all(len(steps(cfg, run)) == 27 for run in cfg["runs"])
