"""Sampling weights from the task-vector principal components (ckptlens.task_vectors.sampling) against
plainly written numpy / scikit-learn computations, and end to end through the workflow on MiniLM
fine-tuned under three seeds that share their base (the samples table checked against
ckptlens.sources.minilm.evaluate of models built by the test itself)."""

import json
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from workflow_helpers import finetune_minilm, step_file

from ckptlens.task_vectors.sampling import (
    TaskVectorSampler,
    check_shared_base,
    fit_layer,
    run_weights,
)


def runs(seed=0, n_runs=5):
    rng = np.random.default_rng(seed)
    base = {
        "a": rng.standard_normal((6, 4)).astype(np.float32),
        "b": rng.standard_normal(7),
        "frozen": rng.standard_normal((3, 3)),
        "ids": np.arange(5),
    }
    shared = rng.standard_normal((6, 4))
    ft = []
    for _ in range(n_runs):
        ft.append(
            {
                "a": (base["a"] + shared + 0.3 * rng.standard_normal((6, 4))).astype(np.float32),
                "b": base["b"] + rng.standard_normal(7) * np.linspace(0.1, 2, 7),
                "frozen": base["frozen"].copy(),
                "ids": base["ids"].copy(),
            }
        )
    return base, ft


def taus(base, ft, layer):
    return np.stack([(f[layer].astype(np.float64) - base[layer].astype(np.float64)).ravel() for f in ft])


def aligned(got, want):
    """got's rows with the sign of want's rows (components are defined up to sign)."""
    return got * np.sign(np.sum(got * want, axis=1, keepdims=True))


@pytest.mark.parametrize("chunk", [1 << 20, 5])
def test_basis_matches_sklearn_pca(chunk):
    base, ft = runs()
    s = TaskVectorSampler(base, ft, chunk=chunk)
    assert s.sampled_layers() == ["a", "b", "frozen"]  # "ids" (integers) is not sampled
    for layer in ("a", "b"):
        t = taus(base, ft, layer)
        pca = PCA().fit(t)
        fit = s.fit(layer)
        assert fit.n_components == 4  # 5 runs, centred: rank 4
        np.testing.assert_allclose(fit.sigma, np.sqrt(pca.explained_variance_[:4]), rtol=1e-9)
        np.testing.assert_allclose(fit.explained_variance_ratio, pca.explained_variance_ratio_[:4], rtol=1e-9)
        pcs = s.components(layer)
        np.testing.assert_allclose(aligned(pcs, pca.components_[:4]), pca.components_[:4], atol=1e-9)
        np.testing.assert_allclose(pcs @ pcs.T, np.eye(4), atol=1e-9)
        # z = 0: the base plus the mean task vector = the plain average of the fine-tuned weights
        mean = s.mean()[layer]
        assert mean.dtype == base[layer].dtype and mean.shape == base[layer].shape
        want = base[layer].astype(np.float64) + pca.mean_.reshape(base[layer].shape)
        np.testing.assert_allclose(mean, want.astype(base[layer].dtype), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mean, np.mean([f[layer] for f in ft], axis=0), rtol=1e-6, atol=1e-6)
    # a layer without variance across runs has no component: its points are base + τ̄ exactly
    assert s.fit("frozen").n_components == 0
    np.testing.assert_array_equal(s.sample(3)["frozen"], ft[0]["frozen"])
    assert s.sample(0)["ids"] is base["ids"] or np.array_equal(s.sample(0)["ids"], base["ids"])
    n_comp = TaskVectorSampler(base, ft, n_components=2)
    np.testing.assert_allclose(n_comp.fit("a").sigma, s.fit("a").sigma[:2])


@pytest.mark.parametrize("coupling", ["joint", "independent"])
def test_samples_lie_in_the_span_with_the_formula(coupling):
    base, ft = runs(1)
    s = TaskVectorSampler(base, ft, scale=0.7, seed=3, coupling=coupling)
    for i in range(3):
        pt = s.sample(i)
        assert set(pt) == set(base) and len(pt) == len(base)
        for layer in ("a", "b"):
            fit, pcs = s.fit(layer), s.components(layer)
            mean_tau = taus(base, ft, layer).mean(axis=0)
            dev = pt[layer].astype(np.float64).ravel() - base[layer].astype(np.float64).ravel() - mean_tau
            tol = 1e-5 if layer == "a" else 1e-9  # "a" is stored as float32
            np.testing.assert_allclose(dev - pcs.T @ (pcs @ dev), 0, atol=tol)  # in the span
            z = s.z(i, layer)
            np.testing.assert_allclose(pcs @ dev, z * fit.sigma, atol=tol)  # θ = θ_b + τ̄ + Σ z σ pc
            # the same point written as a combination of the runs' task vectors
            a = run_weights(fit, z)
            assert a.sum() == pytest.approx(1.0)
            np.testing.assert_allclose(a @ taus(base, ft, layer), dev + mean_tau, atol=tol)


@pytest.mark.parametrize("coupling", ["joint", "independent"])
def test_empirical_covariance_of_the_samples(coupling):
    base, ft = runs(2, n_runs=4)
    s = TaskVectorSampler(base, ft, coupling=coupling, seed=11)
    n = 6000
    xa = np.stack([s.sample(i)["b"] for i in range(n)])
    xb = np.stack([s.sample(i)["a"].astype(np.float64).ravel() for i in range(n)])
    want = sum(sg**2 * np.outer(p, p) for sg, p in zip(s.fit("b").sigma, s.components("b")))
    got = np.cov(xa, rowvar=False)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 0.06 * scale, (np.abs(got - want).max(), scale)
    np.testing.assert_allclose(xa.mean(axis=0), s.mean()["b"], atol=0.06 * math.sqrt(scale))
    # across layers: the runs' own cross-covariance (joint) or none (independent)
    ta, tb = taus(base, ft, "b"), taus(base, ft, "a")
    runs_cross = (ta - ta.mean(0)).T @ (tb - tb.mean(0)) / (len(ft) - 1)
    cross = (xa - xa.mean(0)).T @ (xb - xb.mean(0)) / (n - 1)
    ref = np.sqrt(np.outer(np.diag(want), np.diag(np.cov(xb, rowvar=False)))).max()
    if coupling == "joint":
        assert np.abs(cross - runs_cross).max() < 0.06 * ref
    else:
        assert np.abs(cross).max() < 0.06 * ref and np.abs(runs_cross).max() > 0.3 * ref


def test_seeded_reproducible_and_order_free():
    base, ft = runs(3)
    one = TaskVectorSampler(base, ft, seed=5)
    two = TaskVectorSampler(base, ft, seed=5)
    _ = two.sample(7)["b"]  # another sample first, layers in another order: no influence
    for layer in ("b", "a"):
        np.testing.assert_array_equal(one.sample(2)[layer], two.sample(2)[layer])
    assert not np.allclose(one.sample(2)["b"], one.sample(3)["b"])
    assert not np.allclose(one.sample(2)["b"], TaskVectorSampler(base, ft, seed=6).sample(2)["b"])
    # the joint draw is one vector in run space for all layers; independent draws differ per layer
    assert np.allclose(one.fit("a").loadings @ one.z(0, "a"), one.fit("b").loadings @ one.z(0, "b"))
    ind = TaskVectorSampler(base, ft, seed=5, coupling="independent")
    assert not np.allclose(ind.fit("a").loadings @ ind.z(0, "a"), ind.fit("b").loadings @ ind.z(0, "b"))
    # scale 0: every sample is the mean
    zero = TaskVectorSampler(base, ft, scale=0.0)
    np.testing.assert_array_equal(zero.sample(4)["b"], zero.mean()["b"])


def test_lazy_reads_layers_and_restricted_patterns():
    class Counting(Mapping):
        def __init__(self, d, log):
            self.d, self.log = d, log

        def __getitem__(self, k):
            self.log.append(k)
            return self.d[k]

        def __iter__(self):
            return iter(self.d)

        def __len__(self):
            return len(self.d)

    base, ft = runs(4)
    log = []
    s = TaskVectorSampler(Counting(base, log), {f"r{j}": Counting(f, log) for j, f in enumerate(ft)}, layers=["b"])
    assert s.runs == [f"r{j}" for j in range(5)] and log == []
    _ = s.sample(0)["b"]
    assert set(log) == {"b"}
    log.clear()
    np.testing.assert_array_equal(s.sample(0)["a"], base["a"])  # not selected: the base's
    assert log == ["a"]


def test_shared_base_check_and_errors():
    base, ft = runs(5, n_runs=3)
    starts = {"same": dict(base), "other": {**base, "b": base["b"] + 1}}
    assert check_shared_base(base, starts) == {"other": ["b"]}
    assert check_shared_base(base, starts, layers=["a"]) == {}
    with pytest.raises(ValueError, match="at least 2"):
        TaskVectorSampler(base, ft[:1])
    with pytest.raises(ValueError, match="shape"):
        TaskVectorSampler(base, [ft[0], {**ft[1], "a": np.zeros(3)}]).mean()["a"]
    with pytest.raises(ValueError, match="run 'run1' has no layer 'b'"):
        TaskVectorSampler(base, [ft[0], {"a": ft[1]["a"]}])
    with pytest.raises(ValueError, match="NaN"):
        TaskVectorSampler(base, [ft[0], {**ft[1], "b": ft[1]["b"] * np.nan}]).sample(0)["b"]
    with pytest.raises(ValueError, match="match none"):
        TaskVectorSampler(base, ft, layers=["nothing.*"])
    with pytest.raises(ValueError, match="coupling"):
        TaskVectorSampler(base, ft, coupling="shared")
    assert fit_layer(base["b"], [f["b"] for f in ft], 1).n_components == 1
    from ckptlens.config import sample_settings

    config = {
        "runs": {"r": {"source": {"type": "table", "path": "x"}}},
        "task_vectors": {"t": {"base_run": "r", "runs": ["r", "r"], "sample": {"evaluate": "minilm_sentiment"}}},
    }
    assert sample_settings(config, "t") == {
        "n_samples": 8,
        "scale": 1.0,
        "seed": 0,
        "n_components": None,
        "coupling": "joint",
        "layers": ["**"],
        "evaluate": {"task": "minilm_sentiment", "tokenizer": None, "max_len": 32},
    }


# ----------------------------------------------------------------------------- MiniLM, end to end
@pytest.fixture(scope="module")
def minilm_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm_tv")
    saved = finetune_minilm(root, (0, 1, 2), head_seed=0, steps=5, save_every=5, lr=1e-4, batch_size=8)
    return root, saved


@pytest.mark.slow
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
    from ckptlens.store.tensors import write_tensors

    own = dict(TensorFile(step_file(project, "minilm_seed1", "checkpoints", 0)).items())
    meta = TensorFile(step_file(project, "minilm_seed1", "checkpoints", 0)).metadata
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


@pytest.mark.slow
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
