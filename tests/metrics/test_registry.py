"""Registry extensions: model scope, multi-valued metrics, several references, parameter checks,
NaN policy and the code hash (ckptlens.metrics.registry)."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M
from ckptlens.metrics._common import quantile_key, summarize


@pytest.fixture
def scratch_registry():
    """Register throw-away families/metrics and remove them afterwards."""
    fams, mets = set(M.FAMILIES), set(M.METRICS)
    yield
    for k in set(M.FAMILIES) - fams:
        del M.FAMILIES[k]
    for k in set(M.METRICS) - mets:
        del M.METRICS[k]


def test_existing_layer_scope_behaviour_unchanged():
    w = {"a": np.diag([3.0, 4.0]), "b": np.zeros((2, 3))}
    rows = M.compute_family("weight_spectrum", {"frobenius_norm": {}, "effective_rank": {}}, w, run="r", step=7)
    got = {(r["layer"], r["metric"]): r["value"] for r in rows}
    assert got[("a", "frobenius_norm")] == pytest.approx(5.0)
    assert got[("b", "frobenius_norm")] == 0.0
    assert got[("b", "effective_rank")] == 0.0
    assert all(r["run"] == "r" and r["step"] == 7 for r in rows)
    assert set(rows[0]) == {"run", "step", "layer", "metric", "value"}


def test_references_of_and_multi_reference_metric():
    assert M.references_of(["update_cosine"]) == ["previous", "previous2"]
    assert M.references_of(["svcca_to_final", "update_norm_initial", "frobenius_norm"]) == ["final", "initial"]
    assert M.references_of(["cka_to_final"]) == []  # its final checkpoint is the extraction's input
    m = M.get_metric("update_cosine")
    assert m.reference == "previous" and m.references == ("previous", "previous2")
    assert "previous2" in M.REFERENCES


def test_metric_skipped_when_any_reference_missing():
    w = {"a": np.ones((2, 2))}
    rows = M.compute_family("weight_update", {"update_cosine": {}}, w, {"previous": w})
    assert rows == []
    rows = M.compute_family("weight_update", {"update_cosine": {}}, w, {"previous": w, "previous2": w})
    assert [r["metric"] for r in rows] == ["update_cosine"]


def test_split_metric_name():
    assert M.split_metric_name("linearity_per_sample.p50") == ("linearity_per_sample", "p50")
    assert M.split_metric_name("qk_ov_overlap_max.k4_random") == ("qk_ov_overlap_max", "k4_random")
    assert M.split_metric_name("frobenius_norm") == ("frobenius_norm", None)


@pytest.mark.parametrize(
    "name, params",
    [
        ("proportional_effective_rank", {"r": 0}),
        ("proportional_effective_rank", {"r": "max"}),
        ("screenot_rank", {"k": -1}),
        ("qk_ov_overlap_max", {"ks": []}),
        ("qk_ov_overlap_max", {"pairs": "some"}),
        ("qk_ov_token_mismatch", {"max_tokens": 0}),
        ("linearity_per_sample", {"quantiles": [1.5]}),
        ("linearity_per_sample", {"scale": "sqrt"}),
        ("activation_pca_evr", {"n_components": 0}),
        ("gradient_pca_cosine", {"n_components": "3"}),
    ],
)
def test_invalid_parameter_values_name_the_config_key(name, params):
    key = next(iter(params))
    with pytest.raises(M.MetricConfigError, match=rf"metrics\.{name}\.{key}"):
        M.resolve_params(name, params)


def test_valid_parameters_resolve():
    assert M.resolve_params("proportional_effective_rank", {"r": 64}) == {"r": 64}
    assert M.resolve_params("screenot_rank", {}) == {"k": "auto"}
    assert M.resolve_params("qk_ov_overlap_rms", {"ks": [1, 16]}) == {"ks": [1, 16], "pairs": "all"}


def test_nan_input_gives_one_nan_row_per_declared_output():
    x = np.ones((10, 4))
    x[0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="layer 'l'"):
        rows = M.compute_family("activation_spectrum", {"activation_pca_evr": {"n_components": 3}}, {"l": x})
    assert [r["metric"] for r in rows] == ["activation_pca_evr.pc1", "activation_pca_evr.pc2", "activation_pca_evr.pc3"]
    assert all(math.isnan(r["value"]) for r in rows)


def test_model_scope_family(scratch_registry):
    @M.family("_test_pairs", needs="weights", scope="model")
    class Ctx:
        def __init__(self, store):
            self.store = store

    @M.metric("_test_sum_pairs", label="test", family="_test_pairs")
    def sum_pairs(ctx):
        names = list(ctx.store)
        out = {}
        for a, b in zip(names, names[1:]):
            x, y = ctx.store[a], ctx.store[b]
            out[f"{a}~{b}"] = math.nan if x is None or y is None else float(x.sum() + y.sum())
        return out

    @M.metric("_test_multi", label="test", family="_test_pairs")
    def multi(ctx):
        return {"all": {"n": len(ctx.store), "bad": math.inf}}

    w = {"a": np.ones(2), "b": np.full(2, np.nan), "c": np.ones(3), "d": np.ones(1)}
    with pytest.warns(RuntimeWarning) as rec:
        rows = M.compute_family("_test_pairs", {"_test_sum_pairs": {}, "_test_multi": {}}, w, run="r", step=1)
    got = {(r["layer"], r["metric"]): r["value"] for r in rows}
    assert math.isnan(got[("a~b", "_test_sum_pairs")]) and math.isnan(got[("b~c", "_test_sum_pairs")])
    assert got[("c~d", "_test_sum_pairs")] == 4.0
    assert got[("all", "_test_multi.n")] == 4.0
    assert math.isnan(got[("all", "_test_multi.bad")])
    messages = " ".join(str(w.message) for w in rec)
    assert "layer 'b'" in messages and "run 'r', step 1" in messages and "_test_multi.bad" in messages


def test_model_scope_reference_contexts(scratch_registry):
    @M.family("_test_ref", needs="weights", scope="model")
    class Ctx:
        def __init__(self, store):
            self.total = sum(float(store[k].sum()) for k in store)

    @M.metric("_test_diff", label="test", family="_test_ref", reference="previous")
    def diff(ctx, prev):
        return {"model": ctx.total - prev.total}

    rows = M.compute_family("_test_ref", {"_test_diff": {}}, {"a": np.ones(3)}, {"previous": {"a": np.zeros(3)}})
    assert rows[0]["layer"] == "model" and rows[0]["value"] == 3.0
    assert M.compute_family("_test_ref", {"_test_diff": {}}, {"a": np.ones(3)}) == []


def test_linalg_error_gives_nan_not_a_crash(scratch_registry):
    @M.metric("_test_fails", label="test", family="weight_spectrum")
    def fails(ctx):
        raise np.linalg.LinAlgError("SVD did not converge")

    with pytest.warns(RuntimeWarning, match="did not converge"):
        rows = M.compute_family("weight_spectrum", {"_test_fails": {}}, {"a": np.eye(2)})
    assert math.isnan(rows[0]["value"])


def test_registration_errors(scratch_registry):
    with pytest.raises(ValueError, match="scope"):
        M.family("_x", needs="weights", scope="global")
    with pytest.raises(ValueError, match="reference"):
        M.metric("_y", label="test", family="weight_update", reference=("previous", "next"))
    with pytest.raises(ValueError, match="may not contain"):
        M.metric("_a.b", label="test", family="weight_spectrum")


def test_each_family_lives_in_the_module_named_after_it():
    for name, fam in M.FAMILIES.items():
        assert fam.context.__module__ == f"ckptlens.metrics.{name}"
    for m in M.METRICS.values():
        assert m.fn.__module__ == f"ckptlens.metrics.{m.family}", m.name


def test_family_is_the_module_name_unless_given(scratch_registry):
    with pytest.raises(ValueError, match="test_registry.*its module's name"):
        M.metric("_test_no_family", label="test")(lambda ctx: 0.0)
    assert "_test_no_family" not in M.METRICS


def test_parameters_and_defaults_are_read_from_the_signature(scratch_registry):
    @M.metric("_test_params", label="test", family="weight_spectrum")
    def with_params(ctx, k=3, ks=(1, 2)):
        return float(k)

    assert M.get_metric("_test_params").defaults == {"k": 3, "ks": [1, 2]}  # a tuple default: the config's list
    assert M.resolve_params("_test_params", {"k": 5}) == {"k": 5, "ks": [1, 2]}
    with pytest.raises(ValueError, match="need defaults"):
        M.metric("_test_no_default", label="test", family="weight_spectrum")(lambda ctx, k: 0.0)
    with pytest.raises(ValueError, match="one per reference"):
        M.metric("_test_no_ref_arg", label="test", family="weight_update", reference="previous")(lambda ctx: 0.0)


def test_code_hash_follows_shared_helper_modules():
    from ckptlens.store.codehash import closure

    mods = {
        p.stem
        for p in closure(
            ["ckptlens.metrics.registry", M.FAMILIES["circuits"].context.__module__], narrowed=["ckptlens.metrics"]
        )
    }
    assert {"circuits", "_common", "registry", "layers"} <= mods
    assert "weight_spectrum" not in mods and "activation_similarity" not in mods
    for fam in M.FAMILIES:
        modules = M.family_modules(fam)
        assert f"ckptlens.metrics.{fam}" in modules  # each family is named after its module
        assert all(m.startswith("ckptlens.metrics.") for m in modules)


def test_summarize_matches_numpy():
    v = np.random.default_rng(0).standard_normal(101)
    s = summarize(np.append(v, np.nan), [0.05, 0.5, 0.025])
    assert s["mean"] == pytest.approx(v.mean())
    assert s["p5"] == pytest.approx(np.quantile(v, 0.05))
    assert s["p50"] == pytest.approx(np.median(v))
    assert quantile_key(0.025) == "p2.5" and "p2.5" in s


def test_degenerate_and_metric_warning_name_run_step_layer_metric(scratch_registry):
    @M.metric("_test_undefined", label="test", family="weight_spectrum")
    def undefined(ctx):
        raise M.Degenerate("no value on this input")

    @M.metric("_test_flagged", label="test", family="weight_spectrum")
    def flagged(ctx):
        M.metric_warning("fitted on 3 points")
        return 2.5

    with pytest.warns(RuntimeWarning) as rec:
        rows = M.compute_family(
            "weight_spectrum", {"_test_undefined": {}, "_test_flagged": {}}, {"a": np.eye(2)}, run="r", step=4
        )
    got = {r["metric"]: r["value"] for r in rows}
    assert math.isnan(got["_test_undefined"]) and got["_test_flagged"] == 2.5
    messages = [str(w.message) for w in rec]
    assert any(
        "run 'r', step 4, layer 'a': metric '_test_undefined'" in m and "no value on this input" in m for m in messages
    )
    assert any("run 'r', step 4, layer 'a': metric '_test_flagged': fitted on 3 points" in m for m in messages)
    assert len(messages) == 2  # the NaN itself is not warned a second time


def test_outputs_may_depend_on_the_input_shape(scratch_registry):
    @M.metric(
        "_test_per_row",
        label="test",
        family="weight_spectrum",
        outputs=lambda params, shape=None: [f"r{i}" for i in range(shape[0] if shape else 0)] + ["all"],
    )
    def per_row(ctx):
        return {**{f"r{i}": float(v) for i, v in enumerate(ctx.w.sum(axis=1))}, "all": float(ctx.w.sum())}

    bad = np.ones((3, 2))
    bad[0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        rows = M.compute_family("weight_spectrum", {"_test_per_row": {}}, {"ok": np.ones((3, 2)), "bad": bad})
    names = {(r["layer"], r["metric"]) for r in rows}
    assert names == {(layer, f"_test_per_row.{s}") for layer in ("ok", "bad") for s in ("r0", "r1", "r2", "all")}
    assert M.value_names("_test_per_row") == ["_test_per_row.all"]
