"""The interactive explorer's page (ckptlens.plots.explorer) without a browser: its data (series
by kind in (block, head) order, the values of the table, change points, the training log), that it
is self-contained, and its size at Pythia-1.4B scale. tests/workflow/test_explorer_browser.py
drives it in headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from ckptlens.plots.explorer import MAX_BYTES, explorer_data, explorer_html


def pythia_like(blocks, heads, steps, metrics=("rank",), runs=("r",)):
    rng = np.random.default_rng(0)
    names = []
    for b in range(blocks):
        names += [
            f"gpt_neox.layers.{b}.attention.dense",
            f"gpt_neox.layers.{b}.mlp.dense_4h_to_h",
            f"gpt_neox.layers.{b}",
        ]
        names += [f"gpt_neox.layers.{b}.attention.head{h}.{p}" for h in range(heads) for p in ("ov", "qk")]
    idx = pd.MultiIndex.from_product([runs, steps, names, metrics], names=["run", "step", "layer", "metric"])
    df = idx.to_frame(index=False)
    df["value"] = rng.uniform(0.1, 400.0, len(df))
    return df


def test_series_by_kind_in_block_head_order_with_the_tables_values():
    df = pythia_like(3, 12, [0, 10, 20])
    df.loc[0, "value"] = np.nan
    events = pd.DataFrame(
        [
            {
                "run": "r",
                "metric": "rank",
                "layer": "gpt_neox.layers.1.attention.head10.ov",
                "kind": "change_point",
                "step": 10,
            }
        ]
    )
    log = pd.DataFrame({"step": [0, 5, 10, 15, 20], "loss": [4.0, 3.0, 2.0, 1.5, 1.0], "eval_runtime": 1.0})
    data = explorer_data(df, events, {"r": log})
    assert data["kinds"]["rank"] == ["attention output", "per-head OV", "per-head QK", "MLP output", "block output"]
    ov = data["series"]["r"]["rank"]["per-head OV"]
    # (block, head) order: head2 before head10, block 0 before block 1
    assert ov["layers"][:3] == [f"gpt_neox.layers.0.attention.head{h}.ov" for h in (0, 1, 2)]
    assert ov["layers"][12] == "gpt_neox.layers.1.attention.head0.ov" and len(ov["layers"]) == 36
    layer = "gpt_neox.layers.1.attention.head10.ov"
    want = df[(df.layer == layer)].sort_values("step")["value"].to_numpy()
    np.testing.assert_allclose(ov["values"][ov["layers"].index(layer)], want, rtol=1e-3)
    assert data["events"] == {"r": {"rank": {layer: [10]}}}
    assert data["logs"]["r"]["columns"] == {"loss": [4.0, 3.0, 2.0, 1.5, 1.0]}  # not the eval runtime
    # NaN becomes null, not an invalid JSON NaN
    page = explorer_html(df, events, {"r": log})
    payload = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert None in [v for row in json.loads(payload)["series"]["r"]["rank"]["attention output"]["values"] for v in row]


def test_self_contained_nothing_fetched():
    page = explorer_html(pythia_like(1, 2, [0, 1]), title="t </script><b>")
    assert "<script src" not in page and "<link" not in page
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert "t &lt;/script&gt;&lt;b&gt;" in page  # the title is escaped
    assert page.count("</script>") == 3  # the data, the colour table, the script: nothing ends early


def test_size_at_pythia_1_4b_scale_and_the_bound():
    """24 blocks × (attention, MLP, block output, 16 heads × OV and QK) = 840 series, 154 checkpoints,
    5 metrics: within 10 MB; a smaller bound keeps fewer checkpoints and says so."""
    steps = list(range(0, 154 * 1000, 1000))
    df = pythia_like(24, 16, steps, metrics=("a", "b", "c", "d", "e"))
    assert df["layer"].nunique() == 840
    page = explorer_html(df)
    assert len(page.encode()) <= 10_000_000 <= MAX_BYTES
    small = explorer_html(df, max_bytes=2_000_000)
    assert len(small.encode()) <= 2_000_000
    data = json.loads(re.search(r'id="data">(.*?)</script>', small, re.S).group(1))
    kept = len(data["steps"]["r"])
    assert 2 <= kept < 154 and data["steps"]["r"][0] == 0 and data["steps"]["r"][-1] == steps[-1]
    assert data["notes"] == [f"run r: {kept} of 154 checkpoints kept (evenly spaced) to bound the page"]
