"""Sampling task-vector weights end to end through the workflow (slow): MiniLM fine-tuned runs and
trained runs without evaluation."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from workflow_helpers import finetune_minilm, step_file


# ----------------------------------------------------------------------------- MiniLM, end to end
@pytest.fixture(scope="module")
def minilm_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm_tv")
    saved = finetune_minilm(root, (0, 1, 2), head_seed=0, steps=5, save_every=5, lr=1e-4, batch_size=8)
    return root, saved


def test_sampled_minilm_weights_through_the_workflow(tmp_path, minilm_seeds):
    import torch
    import yaml
    from safetensors.numpy import load_file
    from workflow_helpers import REPO, copy_project, snakemake

    from ckptlens.sources import minilm
    from ckptlens.store.tensors import TensorFile

    root, saved = minilm_seeds
    project = copy_project(tmp_path / "p")
    cfg = yaml.safe_load((REPO / "examples/minilm.yaml").read_text().replace("data/minilm", str(root)))
    for run in cfg["runs"].values():  # the sampling needs no metric: keep the config valid and small
        run["targets"] = {"weights": ["bert.encoder.layer.0.attention.self.query"]}
    cfg["metrics"] = {"frobenius_norm": {}}
    cfg.pop("analysis", None)
    tv = cfg["task_vectors"]["minilm_seeds"]
    assert tv["sample"]["evaluate"] == "minilm_sentiment"
    tv["sample"].update(n_samples=2)
    (project / "minilm.yaml").write_text(yaml.safe_dump(cfg))
    out = project / "results/task_vectors/minilm_seeds"
    targets = ["results/task_vectors/minilm_seeds/samples.csv", "results/task_vectors/minilm_seeds/samples.png"]
    snakemake(project, *targets, "--cores", "2", "--configfile", "minilm.yaml")

    table = pd.read_csv(out / "samples.csv")
    assert list(table["kind"]) == ["base", "finetuned", "finetuned", "finetuned", "mean", "sample", "sample"]
    assert list(table["name"]) == [
        "minilm_seed0@step0",
        "minilm_seed0@step5",
        "minilm_seed1@step5",
        "minilm_seed2@step5",
        "mean",
        "sample0",
        "sample1",
    ]
    tok = minilm.load_task_tokenizer(root / "tokenizer")
    row = table.set_index("name")

    def check(name, model):
        want = minilm.evaluate(model, tok)
        assert row.loc[name, "loss"] == pytest.approx(want["loss"], abs=2e-5), name
        assert row.loc[name, "accuracy"] == pytest.approx(want["accuracy"], abs=1e-9), name

    # the base and the fine-tuned rows: the saved checkpoints, loaded as the user would
    check("minilm_seed0@step0", minilm.load_classifier(saved[0][0]))
    for seed in (0, 1, 2):
        check(f"minilm_seed{seed}@step5", minilm.load_classifier(saved[seed][5]))
    # the mean row: base + mean task vector of every tensor, built here from the plain formula
    base = load_file(saved[0][0] / "model.safetensors")
    finals = [load_file(saved[s][5] / "model.safetensors") for s in (0, 1, 2)]
    model = minilm.load_classifier(saved[0][0])
    state = {
        k: torch.from_numpy(
            (base[k].astype(np.float64) + np.mean([f[k].astype(np.float64) - base[k] for f in finals], axis=0)).astype(
                np.float32
            )
        )
        for k in base
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    check("mean", model)
    # sample 0: the joint draw w ~ N(0, I) in run space, θ = θ_base + τ̄ + Xᵀw/√(n−1) (all components)
    w = np.random.default_rng([0, 0]).normal(0.0, 1.0, 3)
    sample0 = TensorFile(out / "samples/sample0.safetensors")
    for k in ("classifier.weight", "bert.encoder.layer.3.output.dense.weight", "bert.embeddings.LayerNorm.bias"):
        t = np.stack([f[k].astype(np.float64) - base[k] for f in finals])
        x = t - t.mean(0)
        want = base[k] + t.mean(0) + np.tensordot(w, x, axes=1) / math.sqrt(2)
        np.testing.assert_allclose(sample0[k], want.astype(np.float32), rtol=1e-5, atol=1e-7, err_msg=k)
    assert set(sample0) == set(base)
    assert json.loads(sample0.metadata["ckptlens_task_vectors"])["point"] == "sample0"
    # learning happened and the samples were measured, not made up
    assert row.loc["minilm_seed0@step5", "loss"] < row.loc["minilm_seed0@step0", "loss"]
    assert table["loss"].nunique() == len(table)
    comps = pd.read_csv(out / "samples/components.csv")
    assert comps["component"].max() == 2 and len(set(comps["layer"])) == len(base)
    assert (out / "samples.png").stat().st_size > 10_000
    # the runs must share the base: a seed that drew its own head is refused, naming the head
    from ckptlens.sources.readers import CheckpointTensors
    from ckptlens.store.tensors import write_tensors

    # (the run's checkpoint file is a reference to the fine-tuning's folder: a copy replaces it)
    own = CheckpointTensors(step_file(project, "minilm_seed1", "checkpoints", 0))
    own, meta = dict(own.items()), own.metadata
    own["classifier.weight"] = own["classifier.weight"] + np.float32(0.01)
    write_tensors(own, step_file(project, "minilm_seed1", "checkpoints", 0), meta)
    # (a file edited inside a chunk's folder does not date the folder: the sampling is forced)
    proc = snakemake(
        project,
        "results/task_vectors/minilm_seeds/samples/mean.safetensors",
        "--cores",
        "2",
        "--configfile",
        "minilm.yaml",
        "--forcerun",
        "sample_task_vectors_minilm_seeds",
        check=False,
    )
    assert proc.returncode != 0
    log = (out / "logs/sample_task_vectors.log").read_text()
    assert "do not start from the base" in log and "classifier.weight" in log and "--head-seed" in log


def test_sampling_without_evaluation_on_trained_runs(tmp_path):
    """Any source: three two-output MLPs trained by the workflow from one initialisation (different batch
    orders), `independent` coupling, one component, only the hidden layers sampled, no evaluation."""
    import yaml
    from safetensors.numpy import load_file
    from workflow_helpers import copy_project, snakemake

    from ckptlens.store.tensors import TensorFile

    project = copy_project(tmp_path / "p")
    train = {"steps": 20, "save_every": 20, "batch_size": 32, "lr": 0.003, "seed": 0}
    runs = {
        f"mlp_{s}": {
            "source": {"type": "train_mlp", "model": {"hidden": 8, "depth": 2}, "train": {**train, "data_seed": s}},
            "targets": {"weights": ["blocks.*.linear"]},
        }
        for s in (1, 2, 3)
    }
    sample = {"n_samples": 3, "seed": 4, "coupling": "independent", "n_components": 1, "layers": ["blocks.**"]}
    cfg = {
        "runs": runs,
        "metrics": {"frobenius_norm": {}},
        "task_vectors": {"mlps": {"base_run": "mlp_1", "runs": list(runs), "sample": sample}},
    }
    (project / "mlp.yaml").write_text(yaml.safe_dump(cfg))
    d = "results/task_vectors/mlps/samples"
    snakemake(project, f"{d}/components.csv", "--cores", "2", "--configfile", "mlp.yaml")

    base = load_file(step_file(project, "mlp_1", "checkpoints", 0))
    finals = [load_file(step_file(project, r, "checkpoints", 20)) for r in runs]
    mean = load_file(project / f"{d}/mean.safetensors")
    assert set(mean) == set(base) and any(k.startswith("head") for k in base)
    for k in base:
        if k.startswith("blocks."):
            t = np.stack([f[k].astype(np.float64) - base[k] for f in finals])
            np.testing.assert_allclose(mean[k], (base[k] + t.mean(0)).astype(base[k].dtype), rtol=1e-6, atol=1e-7)
            pca = PCA(n_components=1).fit(t.reshape(3, -1))
            for i in range(3):
                dev = load_file(project / f"{d}/sample{i}.safetensors")[k].astype(np.float64) - base[k] - t.mean(0)
                # one component: every sample is the mean moved along pc1 only
                c = pca.components_[0]
                np.testing.assert_allclose(dev.ravel(), (dev.ravel() @ c) * c, atol=1e-6)
        else:
            np.testing.assert_array_equal(mean[k], base[k])  # not selected: the base's
    comps = pd.read_csv(project / f"{d}/components.csv")
    assert set(comps["component"]) == {1}
    coef = pd.read_csv(project / f"{d}/coefficients.csv")
    assert set(coef["point"]) == {"mean", "sample0", "sample1", "sample2"}
    assert (coef.query("point == 'mean' and coefficient == 'z.pc1'")["value"] == 0).all()
    assert TensorFile(project / f"{d}/sample2.safetensors").metadata["ckptlens_source"] == "task_vectors.mlps: sample2"
    assert not (project / "results/task_vectors/mlps/samples.csv").exists()
