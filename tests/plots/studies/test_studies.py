"""ckptlens.plots.studies: the figure registry — the config checks of each kind, the normalised spec,
the dispatch — and the light import the workflow's parse relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ckptlens.plots import _style, studies
from ckptlens.plots.studies import (
    FIGURE_KINDS,
    INPUTS,
    FigureKind,
    RunFacts,
    check_figure,
    register,
)
from tests.plots.studies.helpers import (
    assert_no_leftovers,
    assert_png,
    comparison_data,
    model_size_data,
    render_all,
    rotary_data,
)


def facts(types=None, sources=None, bad_metrics=()):
    """RunFacts of runs whose type is given by ``types`` (default train_toy); ``check_metric_value``
    refuses ``bad_metrics`` and records every call."""
    types = types or {}
    calls = []

    def check_metric_value(metric, key):
        calls.append((metric, key))
        if metric in bad_metrics:
            raise ValueError(f"config key '{key}': metric {metric!r} is not enabled under 'metrics'")

    f = RunFacts(
        source_type=lambda r: types.get(r, "train_toy"),
        source=lambda r: (sources or {}).get(r, {"type": types.get(r, "train_toy")}),
        check_metric_value=check_metric_value,
    )
    return f, calls


def test_every_kind_registered_with_known_inputs_and_schema_options():
    assert list(FIGURE_KINDS) == ["compare", "gradient_pca", "induction", "linearity", "model_size", "rotary_sweep"]
    for kind in FIGURE_KINDS.values():
        assert kind.description and set(kind.reads) <= set(INPUTS), kind.name
        assert all(isinstance(schema, dict) and "type" in schema for schema in kind.options.values()), kind.name
    assert set(FIGURE_KINDS["compare"].options) == {"metric", "layers"}
    assert set(FIGURE_KINDS["induction"].options) == set(FIGURE_KINDS["rotary_sweep"].options) == {"ks"}
    assert set(FIGURE_KINDS["model_size"].options) == {"sizes"}
    assert FIGURE_KINDS["linearity"].options == FIGURE_KINDS["gradient_pca"].options == {}
    assert "log" in FIGURE_KINDS["induction"].reads and set(FIGURE_KINDS["model_size"].reads) == {"pca", "correlation"}


def test_register_refuses_duplicates_unknown_inputs_and_reserved_options():
    def draw(spec, path, inputs):
        return path

    with pytest.raises(ValueError, match="registered twice"):
        register(FigureKind("compare", "again", ("table",), {}, draw))
    with pytest.raises(ValueError, match="unknown input"):
        register(FigureKind("new_kind", "x", ("tables",), {}, draw))
    with pytest.raises(ValueError, match="every figure"):
        register(FigureKind("new_kind", "x", ("table",), {"title": {"type": "string"}}, draw))
    assert "new_kind" not in FIGURE_KINDS


def test_unknown_kind_lists_the_kinds():
    f, _ = facts()
    with pytest.raises(ValueError) as err:
        check_figure("fig", {"kind": "histogram", "runs": ["a"]}, f)
    msg = str(err.value)
    assert msg.startswith("config key 'figures.fig.kind': unknown figure kind 'histogram'")
    assert msg.endswith("(kinds: compare, gradient_pca, induction, linearity, model_size, rotary_sweep)")
    with pytest.raises(ValueError, match="figures.fig.kind"):
        check_figure("fig", {"runs": ["a"]}, f)


def test_unknown_option_refused_naming_the_kind_and_its_options():
    f, _ = facts()
    with pytest.raises(ValueError) as err:
        check_figure("fig", {"kind": "compare", "runs": ["a"], "metric": "m", "ks": [1]}, f)
    assert str(err.value) == (
        "config key 'figures.fig.ks': the compare figure has no option 'ks' (options: title, metric, layers)"
    )
    with pytest.raises(
        ValueError, match=r"'figures.g.sizes': the linearity figure has no option 'sizes' \(options: title\)"
    ):
        check_figure("g", {"kind": "linearity", "runs": ["a"], "sizes": {"a": 1}}, f)
    with pytest.raises(ValueError, match="'figures.g.labels'"):  # labels come from a runs mapping
        check_figure("g", {"kind": "linearity", "runs": ["a"], "labels": {"a": "A"}}, f)


@pytest.mark.parametrize(
    "fig, key",
    [
        ({"kind": "induction", "runs": ["a"], "ks": [0]}, "figures.fig.ks.0"),
        ({"kind": "induction", "runs": ["a"], "ks": []}, "figures.fig.ks"),
        ({"kind": "rotary_sweep", "runs": ["a"], "ks": "1"}, "figures.fig.ks"),
        ({"kind": "compare", "runs": ["a"], "metric": 3}, "figures.fig.metric"),
        ({"kind": "compare", "runs": ["a"], "metric": "m", "layers": "blocks.*"}, "figures.fig.layers"),
        ({"kind": "model_size", "runs": ["a-70m"], "sizes": {"a-70m": -1}}, "figures.fig.sizes.a-70m"),
        ({"kind": "linearity", "runs": ["a"], "title": ["x"]}, "figures.fig.title"),
        ({"kind": "linearity", "runs": []}, "figures.fig.runs"),
        ({"kind": "linearity", "runs": {"a": 1}}, "figures.fig.runs"),
    ],
)
def test_bad_option_value_names_the_key(fig, key):
    f, _ = facts()
    with pytest.raises(ValueError) as err:
        check_figure("fig", fig, f)
    assert str(err.value).startswith(f"config key '{key}': "), str(err.value)


def test_runs_list_or_mapping_normalised():
    f, _ = facts()
    spec = check_figure("fig", {"kind": "linearity", "runs": {"b": "seed B", "a": "seed A"}, "title": "T"}, f)
    assert spec == {"kind": "linearity", "runs": ["b", "a"], "labels": {"b": "seed B", "a": "seed A"}, "title": "T"}
    spec = check_figure("fig", {"kind": "rotary_sweep", "runs": ["a", "b"], "ks": [1, 4]}, f)
    assert spec["runs"] == ["a", "b"] and spec["labels"] == {"a": "a", "b": "b"} and spec["ks"] == [1, 4]


def test_compare_check():
    f, calls = facts(bad_metrics=("nope",))
    with pytest.raises(ValueError, match=r"^config key 'figures.c.metric': a compare figure needs the metric"):
        check_figure("c", {"kind": "compare", "runs": ["a"]}, f)
    check_figure("c", {"kind": "compare", "runs": ["a", "b"], "metric": "weight_norm", "layers": ["blocks.*"]}, f)
    assert calls == [("weight_norm", "figures.c.metric")]
    with pytest.raises(ValueError, match="config key 'figures.c.metric': metric 'nope'"):
        check_figure("c", {"kind": "compare", "runs": ["a"], "metric": "nope"}, f)
    # a table run brings metrics of its own: not checked against the enabled metrics
    f, calls = facts(types={"t": "table"}, bad_metrics=("nope",))
    check_figure("c", {"kind": "compare", "runs": ["a", "t"], "metric": "nope"}, f)
    assert calls == []


def test_induction_check_needs_train_toy_runs():
    f, _ = facts(types={"mlp": "train_mlp"})
    check_figure("i", {"kind": "induction", "runs": ["a", "b"], "ks": [1, 2]}, f)
    with pytest.raises(ValueError) as err:
        check_figure("i", {"kind": "induction", "runs": ["a", "mlp"]}, f)
    assert str(err.value) == (
        "config key 'figures.i.runs': 'mlp' is not a train_toy run (the induction figure reads its training log)"
    )


def test_model_size_check_and_prepared_sizes():
    f, _ = facts(types={r: "huggingface" for r in ("pythia-70m", "custom")})
    with pytest.raises(ValueError) as err:
        check_figure("m", {"kind": "model_size", "runs": ["pythia-70m", "custom"]}, f)
    assert str(err.value).startswith("config key 'figures.m.sizes': no size for run 'custom'")
    spec = check_figure("m", {"kind": "model_size", "runs": ["pythia-70m", "custom"], "sizes": {"custom": 5e8}}, f)
    assert spec["sizes"] == {"pythia-70m": 70e6, "custom": 5e8}


def test_gradient_pca_prepared_dims_from_the_first_run():
    mlp = {"type": "train_mlp", "model": {"hidden": 48}, "train": {}}
    f, _ = facts(
        types={"m": "train_mlp", "d": "train_mlp", "x": "local"},
        sources={"m": mlp, "d": {"type": "train_mlp", "train": {}}},
    )
    assert check_figure("g", {"kind": "gradient_pca", "runs": ["m", "x"]}, f)["dims"] == 48
    assert check_figure("g", {"kind": "gradient_pca", "runs": ["d"]}, f)["dims"] == 32  # the MLP's default
    assert "dims" not in check_figure("g", {"kind": "gradient_pca", "runs": ["x", "m"]}, f)


def test_plot_study_figure_unknown_kind_and_missing_inputs_give_no_data(tmp_path, capsys):
    p = studies.plot_study_figure({"kind": "nope", "runs": ["a"]}, tmp_path / "n.png", {})
    assert p == tmp_path / "n.png" and p.is_file()
    assert "WARNING: " in capsys.readouterr().err
    p = studies.plot_study_figure({"kind": "linearity", "runs": ["a"]}, tmp_path / "l.png", {"table": {}})
    assert p.is_file()
    p = studies.plot_study_figure(
        {"kind": "compare", "runs": ["a"], "metric": "m"},
        tmp_path / "c.png",
        {"table": {"a": pd.DataFrame(columns=["run", "step", "layer", "metric", "value"])}},
    )
    assert p.is_file()


def test_no_data_warning_line(tmp_path, capsys):
    path = tmp_path / "x.png"
    _style.no_data(path, "a figure", "why")
    assert capsys.readouterr().err.strip() == f"WARNING: {path}: no data for 'a figure' (why)"


def test_importing_the_registry_does_not_import_matplotlib():
    code = (
        "import sys, ckptlens.plots, ckptlens.plots.studies; "
        "from ckptlens.plots.studies.model_size import parse_model_size; "
        "assert parse_model_size('pythia-1.4b') == 1.4e9; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; "
        "assert 'sklearn' not in sys.modules, 'sklearn imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


def test_study_figure_dispatch(tmp_path, captured, no_data_calls):
    table = comparison_data(runs=("x",), n_layers=3)
    tables = {"a": table.assign(run="a"), "b": table.assign(run="b")}
    dyn = {
        "a": pd.DataFrame(
            [("a", "weight_norm", "gpt_neox.layers.1.attention.dense", "change_point", 8, 0, 1)],
            columns=["run", "metric", "layer", "kind", "step", "value", "score"],
        )
    }
    spec = {
        "kind": "compare",
        "runs": ["b", "a"],
        "labels": {"a": "seed A", "b": "seed B"},
        "metric": "weight_norm",
        "layers": ["gpt_neox.layers.*.attention.dense"],
        "title": "T",
    }
    studies.plot_study_figure(spec, tmp_path / "c.png", {"table": tables, "dynamics": dyn})
    name, args, kw = captured[-1]
    assert name == "plot_run_comparison" and args[1] == "weight_norm"
    assert set(args[0]["run"]) == {"seed A", "seed B"} and kw["runs"] == ["seed B", "seed A"]
    assert kw["layers"] == [f"gpt_neox.layers.{i}.attention.dense" for i in range(3)] and kw["title"] == "T"
    assert list(kw["events"]["run"]) == ["seed A"]
    # a runs mapping gives the labels; logs and ks passed on
    logs = {"a": pd.DataFrame({"step": [0, 10], "loss": [1.0, 0.5]})}
    studies.plot_study_figure(
        {"kind": "induction", "runs": {"a": "pool A", "b": "pool B"}, "ks": [1]},
        tmp_path / "i.png",
        {"table": tables, "log": logs, "dynamics": dyn},
    )
    name, args, kw = captured[-1]
    assert name == "plot_induction_study" and list(args[0]) == ["pool A", "pool B"] and list(args[1]) == ["pool A"]
    assert kw["ks"] == [1] and list(kw["events"]["run"]) == ["pool A"]
    # one-run figures: the first run with a table
    studies.plot_study_figure(
        {"kind": "linearity", "runs": ["none", "b"]}, tmp_path / "l.png", {"table": {"b": tables["b"]}}
    )
    name, args, kw = captured[-1]
    assert name == "plot_linearity_study" and args[0] is tables["b"] and kw["title"].endswith(": b")
    # model size: sizes given or read from the run names
    ex, co = model_size_data(sizes={"pythia-70m": 1, "pythia-1.4b-deduped": 1, "custom": 1})
    pca = {r: d for r, d in ex.groupby("run")}
    corr = {r: d for r, d in co.groupby("run")}
    studies.plot_study_figure(
        {"kind": "model_size", "runs": ["pythia-70m", "pythia-1.4b-deduped", "custom"], "sizes": {"custom": 5e8}},
        tmp_path / "m.png",
        {"pca": pca, "correlation": corr},
    )
    name, args, kw = captured[-1]
    assert name == "plot_model_size_study"
    assert args[2] == {"pythia-70m": 70e6, "pythia-1.4b-deduped": 1.4e9, "custom": 5e8}
    assert set(args[0]["run"]) == set(args[1]["run"]) == {"pythia-70m", "pythia-1.4b-deduped", "custom"}
    # unknown kind, unmatched layer patterns: "no data"
    studies.plot_study_figure({"kind": "nope", "runs": ["a"]}, tmp_path / "n.png", {"table": tables})
    studies.plot_study_figure({**spec, "layers": ["blocks.*"]}, tmp_path / "u.png", {"table": tables})
    assert [p.name for p in no_data_calls] == ["n.png", "u.png"]


def test_study_figure_end_to_end(tmp_path, no_data_calls):
    p = studies.plot_study_figure(
        {"kind": "rotary_sweep", "runs": ["pool 256"]},
        tmp_path / "r.png",
        {"table": rotary_data(runs=("pool 256",), steps=[0, 10, 100])},
    )
    assert_png(p)
    assert not no_data_calls


# --------------------------------------------------------------------------------------------
# PNGs
# --------------------------------------------------------------------------------------------


def test_render_all_writes_pngs_atomically(tmp_path, no_data_calls):
    # three figures only (the test suite must stay fast); every wrapper shares _save
    paths = render_all(tmp_path / "figs", light=True, names=("induction_study", "linearity_study", "run_comparison"))
    assert [p.name for p in paths] == ["induction_study.png", "linearity_study.png", "run_comparison.png"]
    for p in paths:
        assert_png(p)
    assert not no_data_calls
    assert_no_leftovers(tmp_path)
