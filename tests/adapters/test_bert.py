"""ckptlens.adapters.bert: heads that rebuild the attention output, prefixed (RoBERTa-style) keys."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    BertAdapter,
    get_adapter,
)
from tests.adapters.helpers import (  # noqa: E402
    D,
    H,
    L,
    V,
    _capture,
    _check_circuits,
    _check_layer_names,
    _check_plain_weights,
    _pieces,
    _rebuild,
    _state,
)


def test_bert_heads_rebuild_attention_output(bert):
    model, cfg = bert
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, BertAdapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(3))
    for i in range(L):
        module = f"encoder.layer.{i}.attention"
        layer = model.encoder.layer[i].attention
        x, _ = _capture(layer, lambda: model(tokens))
        _, y = _capture(layer.output.dense, lambda: model(tokens))  # before dropout + residual LayerNorm
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        torch.testing.assert_close(_rebuild(p, aw, x[0], causal=False), y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)
    names = _check_plain_weights(adapter, model, keys, get)
    assert "encoder.layer.0.attention.self.query" in names and "encoder.layer.1.output.dense" in names
    _check_layer_names(adapter, keys, get)
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["encoder.layer.0", "encoder.layer.1"]


def test_bert_prefixed_keys_roberta_style():
    """Task models prefix the encoder (``bert.encoder...``); names keep the prefix."""
    cfg = transformers.BertConfig(
        hidden_size=D, num_attention_heads=H, num_hidden_layers=1, intermediate_size=64, vocab_size=V
    )
    model = transformers.BertForMaskedLM(cfg)
    keys, get, _ = _state(model)
    adapter = get_adapter(None, keys, metadata=cfg.to_dict())
    assert adapter.name == "bert"
    assert "bert.encoder.layer.0.attention.head0.qk" in adapter.layer_names(keys)
    assert adapter.embed_key(keys) == "bert.embeddings.word_embeddings.weight"
