"""The adapter base (ckptlens.adapters.base): patterns read only what is needed, lazy weight matrices,
module names and the config in the metadata."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    get_adapter,
    module_names_from_keys,
)
from tests.adapters.helpers import L, _counting, _state  # noqa: E402


# ---------------------------------------------------------------------------------------------
# laziness, patterns, selection
def test_patterns_read_only_what_is_needed(neox):
    model, cfg = neox
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    g, calls = _counting(get)
    out = dict(adapter.weight_matrices(keys, g, ["gpt_neox.layers.1.attention.head2.ov"]))
    assert list(out) == ["gpt_neox.layers.1.attention.head2.ov"]
    assert sorted(set(calls)) == [
        "gpt_neox.layers.1.attention.dense.bias",
        "gpt_neox.layers.1.attention.dense.weight",
        "gpt_neox.layers.1.attention.query_key_value.bias",
        "gpt_neox.layers.1.attention.query_key_value.weight",
    ]
    g, calls = _counting(get)
    out = dict(adapter.weight_matrices(keys, g, ["*.mlp.*"]))
    assert sorted(out) == sorted(
        f"gpt_neox.layers.{i}.mlp.{m}" for i in range(L) for m in ("dense_h_to_4h", "dense_4h_to_h")
    )
    assert all(".mlp." in c for c in calls)
    # a predicate works as well as globs
    assert list(dict(adapter.weight_matrices(keys, get, lambda n: n == "embed"))) == ["embed"]


def test_weight_matrices_is_lazy(neox):
    """It is a generator: nothing is read before the first item is asked for."""
    model, cfg = neox
    keys, get, _ = _state(model)
    g, calls = _counting(get)
    it = get_adapter("auto", keys, metadata=cfg.to_dict()).weight_matrices(keys, g, None)
    assert calls == []
    next(it)
    assert len(calls) == 1


def test_project_pattern_semantics_can_be_plugged_in(neox):
    patterns = pytest.importorskip("ckptlens.store.patterns")
    model, cfg = neox
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    got = [
        n for n, _ in adapter.weight_matrices(keys, get, ["gpt_neox.layers.*.attention.dense"], match=patterns.matches)
    ]
    assert got == ["gpt_neox.layers.0.attention.dense", "gpt_neox.layers.1.attention.dense"]


def test_module_names_from_keys():
    assert module_names_from_keys(["a.b.weight", "a.c.bias", "d"]) == ["a", "a.b", "a.c"]


def test_config_flattened_into_safetensors_metadata_gives_the_heads():
    """import_checkpoint stores a config.json as string metadata, one JSON-encoded value per key."""
    from ckptlens.adapters import model_config

    meta = {"model_type": "bert", "num_attention_heads": "12", "hidden_size": "384", "architectures": '["BertModel"]'}
    cfg = model_config(meta)
    assert cfg["num_attention_heads"] == 12 and cfg["architectures"] == ["BertModel"]
