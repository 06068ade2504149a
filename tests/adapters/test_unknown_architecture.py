"""An architecture no adapter knows (GPT-Neo, built offline from a tiny config) gets the generic
adapter with a one-line note saying which per-head metrics are unavailable and why; ``ckptlens
layers`` shows the same note; a model without attention (a small CNN) gets no note."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import GenericAdapter, get_adapter  # noqa: E402


def _gpt_neo():
    cfg = transformers.GPTNeoConfig(
        vocab_size=50,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global"], 2]],
        max_position_embeddings=16,
    )
    return transformers.GPTNeoForCausalLM(cfg), cfg


def test_unknown_architecture_gets_generic_with_a_one_line_note():
    model, cfg = _gpt_neo()
    keys = list(model.state_dict())
    with pytest.warns(UserWarning) as caught:
        adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, GenericAdapter)
    notes = [str(w.message) for w in caught if "no ckptlens adapter" in str(w.message)]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith("no ckptlens adapter for model_type 'gpt_neo': the generic adapter gives every weight")
    assert "no per-head pieces (.head{h}.q|k|v|o|qk|ov)" in notes[0] and "qk_ov_*" in notes[0]
    assert "how its attention weights split into heads is not known" in notes[0]
    assert not any(".head" in n for n in adapter.layer_names(keys))


def test_ckptlens_layers_shows_the_note(tmp_path):
    layers = pytest.importorskip("ckptlens.cli.layers")
    model, _ = _gpt_neo()
    model.save_pretrained(tmp_path / "neo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = layers.describe(layers.inspect_path(str(tmp_path / "neo")))
    assert d["architecture"] == "generic"
    assert any(n.startswith("no ckptlens adapter for model_type 'gpt_neo'") for n in d["notes"])
    assert "note: no ckptlens adapter for model_type 'gpt_neo'" in layers.format_layers(d)


def test_a_model_without_attention_gets_no_note():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    sd = net.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter = get_adapter("auto", list(sd), shapes={k: v.shape for k, v in sd.items()})
    assert adapter.name == "generic"
