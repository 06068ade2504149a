"""Every registered metric through the real workflow (tests/configs/catalogue.yaml), with values
checked against plain computations on the workflow's own extraction files."""

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file
from sklearn.decomposition import PCA
from workflow_helpers import REPO, checkpoint_weights, copy_project, snakemake, step_file

from ckptlens.metrics import FAMILIES, METRICS, split_metric_name, value_names, values_depend_on_input

#: parameters smaller than the defaults, to keep the run short (every other metric: its defaults)
PARAMS = {
    "qk_ov_overlap_max": {"ks": [1, 2]},
    "qk_ov_overlap_rms": {"ks": [1, 2]},
    "embed_ov_overlap_max": {"ks": [1, 2]},
    "embed_ov_overlap_rms": {"ks": [1, 2]},
    "qk_ov_rotary_sweep": {"offsets": [0, 1, 4], "ks": [1, 2]},
    "activation_pca_evr": {"n_components": 3},
    "gradient_pca_evr": {"n_components": 2},
    "gradient_pca_variance": {"n_components": 2},
    "gradient_pca_cosine": {"n_components": 2},
    "alpha_req": {"ranks": [2, 10]},  # the tiny model's 16 features: the default needs 100 eigenvalues
}
#: the multi-output MLP runs compute the metrics of its own input kind (and two for comparison);
#: the transformer run every other registered metric
MLP_NEEDS = ("activation_gradients",)


def catalogue_config() -> dict:
    """tests/configs/catalogue.yaml with every registered metric enabled, from the registry: a new
    metric is in the catalogue run without editing the config."""
    cfg = yaml.safe_load((REPO / "tests/configs/catalogue.yaml").read_text())
    cfg["metrics"] = {name: PARAMS.get(name, {}) for name in METRICS}
    mlp = [m for m in METRICS if FAMILIES[METRICS[m].family].needs in MLP_NEEDS]
    for run, entry in cfg["runs"].items():
        entry["metrics"] = (
            mlp + ["frobenius_norm", "cka_to_final"] if run.startswith("mlp") else [m for m in METRICS if m not in mlp]
        )
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("catalogue"))
    (project / "config/config.yaml").write_text(yaml.safe_dump(catalogue_config(), sort_keys=False))
    snakemake(project, "--cores", "2")
    return project


def table(project, run):
    return pd.read_parquet(project / f"results/runs/{run}/metrics.parquet")


def value(t, step, layer, metric):
    return t.query("step == @step and layer == @layer and metric == @metric")["value"].item()


def test_every_registered_metric_lands_in_a_tidy_table(project):
    cfg = yaml.safe_load((project / "config/config.yaml").read_text())
    assert set(cfg["metrics"]) == set(METRICS), "the catalogue config must enable every registered metric"
    seen = set()
    for run in cfg["runs"]:
        t = table(project, run)
        seen |= {split_metric_name(m)[0] for m in t["metric"]}
        assert sorted(t["step"].unique()) == [0, 20, 40, 60]
    assert seen == set(METRICS)
    tf = table(project, "tf")
    assert tf["value"].notna().all()


def test_declared_values_are_the_rows_each_metric_gives(project):
    """value_names (what the config check accepts as "<metric>.<suffix>") against the rows written."""
    cfg = yaml.safe_load((project / "config/config.yaml").read_text())
    written = set()
    for run in cfg["runs"]:
        written |= set(table(project, run)["metric"])
    for name, params in cfg["metrics"].items():
        rows = {m for m in written if split_metric_name(m)[0] == name}
        declared = set(value_names(name, params))
        if not declared:
            assert rows == {name}, name
        elif values_depend_on_input(name):  # one per attention head: known from the data only
            assert declared < rows, (name, sorted(rows ^ declared))
        else:  # the rotary sweep's token z-scores need an embedding, which the catalogue gives
            assert rows == declared, (name, sorted(rows ^ declared))


def test_weight_update_and_spectral_values(project):
    t = table(project, "tf")
    w = {s: checkpoint_weights(project, "tf", s) for s in (0, 20, 40)}
    name = "blocks.0.attn.q_proj"
    d_prev, d_prev2 = w[40][name] - w[20][name], w[20][name] - w[0][name]
    assert value(t, 40, name, "update_norm_previous") == pytest.approx(np.linalg.norm(d_prev), rel=1e-5)
    assert value(t, 40, name, "update_norm_initial") == pytest.approx(
        np.linalg.norm(w[40][name] - w[0][name]), rel=1e-5
    )
    cos = (d_prev * d_prev2).sum() / (np.linalg.norm(d_prev) * np.linalg.norm(d_prev2))
    assert value(t, 40, name, "update_cosine") == pytest.approx(cos, rel=1e-4)
    ov = w[40]["blocks.1.attn.head1.ov"].astype(np.float64)
    s = np.linalg.svd(ov, compute_uv=False)
    assert value(t, 40, "blocks.1.attn.head1.ov", "stable_rank") == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-5)


def test_circuit_matching_against_plain_svds(project):
    t = table(project, "tf")
    w = checkpoint_weights(project, "tf", 60)
    qk = w["blocks.1.attn.head0.qk"].astype(np.float64)
    ov = w["blocks.0.attn.head1.ov"].astype(np.float64)
    _, _, v1t = np.linalg.svd(qk)
    u2, _, _ = np.linalg.svd(ov)
    s = np.linalg.svd(v1t[:2].T.T @ u2[:, :2], compute_uv=False)  # V1[:, :k]^T U2[:, :k], k = 2
    label = "blocks.1.attn.head0.qk~blocks.0.attn.head1.ov"
    assert value(t, 60, label, "qk_ov_overlap_max.k2") == pytest.approx(s.max(), rel=1e-4)
    assert value(t, 60, label, "qk_ov_overlap_rms.k2") == pytest.approx(np.sqrt(np.mean(s**2)), rel=1e-4)
    m = qk @ ov
    z = (np.mean(np.diag(m)) - m.mean()) / m.std()
    assert value(t, 60, label, "qk_ov_diag_zscore") == pytest.approx(z, rel=1e-3)


def test_linearity_and_cka_against_plain_formulas(project):
    t = table(project, "tf")
    a = load_file(step_file(project, "tf", "extract/activations", 20))
    x, y = (a[k].astype(np.float64) for k in ("blocks.0", "blocks.1"))
    xn, yn = ((m - m.mean(0)) / np.linalg.norm(m - m.mean(0)) for m in (x, y))
    coef, *_ = np.linalg.lstsq(xn, yn, rcond=None)
    score = 1 - np.linalg.norm(xn @ coef - yn) ** 2
    assert value(t, 20, "blocks.0~blocks.1", "linearity_score") == pytest.approx(score, rel=1e-5)
    f = load_file(step_file(project, "tf", "extract/activations", 60))["blocks.1"].astype(np.float64)
    n = len(y)
    h = np.eye(n) - 1 / n
    k, l = y @ y.T, f @ f.T
    cka = np.trace(k @ h @ l @ h) / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(l @ h @ l @ h))
    assert value(t, 20, "blocks.1", "cka_to_final") == pytest.approx(cka, rel=1e-6)


def test_gradient_pca_against_sklearn(project):
    t = table(project, "mlp_a")
    g = load_file(step_file(project, "mlp_a", "extract/activation_gradients", 40))
    for key in ("blocks.1.linear|out0", "blocks.0.linear|out1"):
        evr = PCA(n_components=2).fit(g[key].astype(np.float64)).explained_variance_ratio_
        for i in range(2):
            assert value(t, 40, key, f"gradient_pca_evr.pc{i + 1}") == pytest.approx(evr[i], rel=1e-5)
    c0 = PCA(n_components=1).fit(g["blocks.1.linear|out0"].astype(np.float64)).components_[0]
    c1 = PCA(n_components=1).fit(g["blocks.1.linear|out1"].astype(np.float64)).components_[0]
    label = "blocks.1.linear|out0~blocks.1.linear|out1"
    assert value(t, 40, label, "gradient_pca_cosine.pc1") == pytest.approx(abs(c0 @ c1), rel=1e-4)


def test_task_vectors_across_runs_sharing_a_base(project):
    base = {r: load_file(step_file(project, r, "checkpoints", 0)) for r in ("mlp_a", "mlp_b", "mlp_c")}
    assert all(np.array_equal(base["mlp_a"][k], base["mlp_b"][k]) for k in base["mlp_a"])  # shared init
    tv = pd.read_csv(project / "results/task_vectors/mlp_seeds/task_vectors.csv")
    w0 = checkpoint_weights(project, "mlp_a", 0)
    finals = [checkpoint_weights(project, r, 60) for r in ("mlp_a", "mlp_b", "mlp_c")]
    layer = "blocks.1.linear"
    taus = np.stack([(f[layer] - w0[layer]).ravel() for f in finals]).astype(np.float64)
    evr = PCA(n_components=2).fit(taus).explained_variance_ratio_
    got = tv.query("layer == @layer").set_index("metric")["value"]
    assert got["task_vector_pca_evr.pc1"] == pytest.approx(evr[0], rel=1e-4)
    assert got["task_vector_pca_evr.pc2"] == pytest.approx(evr[1], rel=1e-4)
    assert (project / "results/task_vectors/mlp_seeds/task_vectors.png").stat().st_size > 0


def test_dynamics_table_matches_the_library_on_the_tidy_table(project):
    from ckptlens.analysis.dynamics import DYNAMICS_COLUMNS, detect_dynamics, training_log_dynamics

    for run in ("tf", "mlp_a"):
        got = pd.read_csv(project / f"results/runs/{run}/analysis/dynamics.csv")
        assert list(got.columns) == DYNAMICS_COLUMNS
        want, _ = detect_dynamics(
            table(project, run), thresholds={"cka_to_final": {"value": 0.9, "direction": "above"}}
        )
        log, _ = training_log_dynamics(pd.read_csv(project / f"results/runs/{run}/train_log.csv"), run)
        want = pd.concat([want, log], ignore_index=True)
        assert len(got) == len(want) > 0
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
    # a threshold metric converges where it stays >= 0.9 from then on (plain loop)
    t = table(project, "tf").query("metric == 'cka_to_final' and layer == 'blocks.0'").sort_values("step")
    settled = None
    for s, v in zip(t["step"], t["value"]):
        if v >= 0.9 and settled is None:
            settled = s
        elif v < 0.9:
            settled = None
    got = pd.read_csv(project / "results/runs/tf/analysis/dynamics.csv")
    row = got.query("kind == 'converged' and metric == 'cka_to_final' and layer == 'blocks.0'")
    assert (row["step"].tolist() or [None]) == [settled]


def test_study_figures_and_report_grouping(project):
    from PIL import Image

    cfg = yaml.safe_load((project / "config/config.yaml").read_text())
    for name in cfg["figures"]:
        png = project / f"results/figures/{name}.png"
        with Image.open(png) as im:
            assert im.size[0] > 800 and im.size[1] > 400, name
    snakemake(project, "--report", "report.html")
    html = (project / "report.html").read_text()
    # grouped by study (default name), run and stage; captions describe the metrics shown
    assert '"ckptlens"' in html and "all runs" in html
    for stage in ("metric trajectories", "cross-metric analysis", "induction", "compare"):
        assert stage in html
    assert "Largest singular value" in html  # qk_ov_overlap_max's description in a caption


def test_notebook_doc_runs_on_a_results_folder(project, monkeypatch):
    """docs/notebook.md: every python block, in order, on this workflow's results (run tf)."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs/notebook.md").read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(project)
    ns = {}
    exec(blocks[0], ns)
    ns["run"] = "tf"
    for block in blocks[1:]:
        exec(block, ns)
    assert set(ns["table"]["run"]) == {"tf"} and len(ns["everything"]["run"].unique()) == 4
    assert {"pca", "correlation", "dynamics"} <= set(ns["analysis"])
    assert set(ns["task_vectors"]["run"]) == {"mlp_seeds"}
    assert (project / ns["out"] / "task_vectors.png").stat().st_size > 0
    assert ns["rows"] and {r["metric"] for r in ns["rows"]} == {"effective_rank", "stable_rank"}
