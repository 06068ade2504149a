"""One depth order for every stage (ckptlens.store.layers)."""

from ckptlens.store.layers import layer_index, layer_key, layer_order, pair_label, split_pair


def test_one_depth_order_whatever_order_the_names_come_in():
    """The names the three old orderings disagreed on: the embedding and an input projection
    first, blocks by number (2 before 10), the head last."""
    names = ["pos_embed_first", "input_proj", "blocks.1", "blocks.10", "blocks.2", "lm_head"]
    want = ["input_proj", "pos_embed_first", "blocks.1", "blocks.2", "blocks.10", "lm_head"]
    assert layer_order(names) == want
    assert layer_order(reversed(names)) == want
    assert sorted(names, key=layer_key) == want


def test_submodules_before_their_module_and_heads_in_natural_order():
    names = ["blocks.0", "blocks.0.attn", "embed", "unembed", "blocks.1.attn.head10.qk", "blocks.1.attn.head2.qk"]
    assert layer_order(names) == [
        "embed",
        "blocks.0.attn",
        "blocks.0",
        "blocks.1.attn.head2.qk",
        "blocks.1.attn.head10.qk",
        "unembed",
    ]
    # an output embedding is not an input
    assert layer_order(["embed_out", "gpt_neox.layers.0", "gpt_neox.embed_in"]) == [
        "gpt_neox.embed_in",
        "gpt_neox.layers.0",
        "embed_out",
    ]


def test_pairs_sort_by_their_first_then_second_layer():
    a = pair_label("blocks.1.attn.head0.qk", "blocks.0.attn.head1.ov")
    b = pair_label("blocks.1.attn.head0.qk", "blocks.0.attn.head0.ov")
    e = pair_label("embed", "blocks.0.attn.head0.ov")
    assert layer_order([a, "blocks.1.attn.head0.qk", b, e]) == [e, "blocks.1.attn.head0.qk", b, a]
    assert split_pair(a) == ("blocks.1.attn.head0.qk", "blocks.0.attn.head1.ov") and split_pair("x") is None
    assert layer_index("gpt_neox.layers.11.mlp") == 11 and layer_index("embed") is None


def test_every_stage_orders_layers_alike():
    """The correlation table's rows, the linearity chain and the dynamics table follow the one
    depth order (before, the analysis put an input projection last, the metrics first)."""
    import numpy as np
    import pandas as pd

    from ckptlens.analysis.correlation import metric_correlations
    from ckptlens.analysis.dynamics import detect_dynamics
    from ckptlens.metrics import compute_family

    names = ["pos_embed_first", "input_proj", "blocks.1", "blocks.10", "blocks.2", "lm_head"]
    want = layer_order(names)
    rng = np.random.default_rng(0)
    acts = {n: rng.standard_normal((40, 3)) for n in sorted(names)}  # a store lists them alphabetically
    rows = compute_family("activation_pairs", {"consecutive_cosine": {}}, acts)
    chain = [r["layer"] for r in rows if r["metric"] == "consecutive_cosine.mean"]
    assert chain == [pair_label(a, b) for a, b in zip(want, want[1:])]
    steps = np.arange(8)
    table = pd.DataFrame(
        [
            {"run": "r", "step": int(s), "layer": n, "metric": m, "value": float(rng.standard_normal())}
            for n in sorted(names)
            for m in ("a", "b")
            for s in steps
        ]
    )
    corr, _ = metric_correlations(table, [("a", "b")])
    assert [layer for layer in corr["layer"] if layer != "mean"] == want
    table["value"] = [float(s >= 4) * 10 + 0.01 * i for i, s in enumerate(table["step"])]
    events, _ = detect_dynamics(table)
    seen = list(dict.fromkeys(events.loc[events["metric"] == "a", "layer"]))
    assert seen == want
