"""The external metrics table source (ckptlens.sources.table), on real Pythia data where it is present."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ckptlens.sources.table import TableError, load_table

PYTHIA_TABLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"


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
