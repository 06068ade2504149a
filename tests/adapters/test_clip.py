"""ckptlens.adapters.clip on CLIPVisionModel (``clip_vision_model``) and a full CLIPModel (``clip``),
built offline (tiny configs, eager attention, random weights and biases): per-head attention
rebuilt from the pieces equals the vision layers' own probabilities and output, OV paths sum to the
output, to 1e-5; the text tower is left out unless ``ckptlens_towers`` asks for it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import CLIPAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.sources.layer_names import names_from_keys  # noqa: E402
from tests.adapters.rebuild import check_circuits, head_pieces, randomize, rebuild, run_attention, state  # noqa: E402

D, H, L, IMG, P = 32, 4, 2, 16, 4
T = (IMG // P) ** 2 + 1
VISION = dict(
    hidden_size=D, num_hidden_layers=L, num_attention_heads=H, intermediate_size=64, image_size=IMG, patch_size=P
)
TEXT = dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, vocab_size=50)


def _models():
    vc = transformers.CLIPVisionConfig(**VISION)
    vc._attn_implementation = "eager"
    full = transformers.CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16)
    full._attn_implementation = "eager"
    full.vision_config._attn_implementation = "eager"
    full.text_config._attn_implementation = "eager"
    return {
        "clip_vision_model": (randomize(transformers.CLIPVisionModel(vc), seed=5), vc),
        "clip": (randomize(transformers.CLIPModel(full), seed=6), full),
    }


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("kind", ["clip_vision_model", "clip"])
def test_clip_vision_heads_rebuild_attention(models, kind):
    model, cfg = models[kind]
    keys, get, sd = state(model)
    shapes = {k: v.shape for k, v in sd.items()}
    adapter = get_adapter("auto", keys, cfg.to_dict(), shapes=shapes)
    assert isinstance(adapter, CLIPAdapter) and adapter.n_heads == H
    modules = adapter.attention_modules(keys)
    pre = "vision_model." if kind == "clip" else ""
    assert modules == [f"{pre}encoder.layers.{i}.self_attn" for i in range(L)]
    vision = model.vision_model if kind == "clip" else model
    pixels = torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    for i, module in enumerate(modules):
        x, _, probs, y = run_attention(vision, vision.encoder.layers[i].self_attn, pixels)
        assert x.shape == (T, D)
        p = head_pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        got, out, out_ov = rebuild(p, aw, x, causal=False)
        torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_ov, y, rtol=1e-5, atol=1e-5)
        check_circuits(p, aw)
    names = adapter.layer_names(keys, shapes)
    assert not any(n.startswith(("text_model", "text_projection")) for n in names)
    w = dict(adapter.weight_matrices(keys, get, [f"{pre}embeddings.*", "visual_projection"], shapes=shapes))
    assert w[f"{pre}embeddings.class_embedding"].shape == (1, D)
    assert w[f"{pre}embeddings.position_embedding"].shape == (T, D)
    assert w[f"{pre}embeddings.patch_embedding"].shape == (D, 3 * P * P)
    if kind == "clip":
        np.testing.assert_array_equal(w["visual_projection"], sd["visual_projection.weight"])  # Linear: [out, in]
    t = default_targets(names_from_keys(keys, cfg.to_dict(), shapes), cfg.to_dict())
    assert t["activations"] == [f"{pre}encoder.layers.*"]
    assert f"{pre}encoder.layers.*.self_attn.head*.ov" in t["weights"]


def test_clip_text_tower_when_asked(models):
    model, cfg = models["clip"]
    keys, get, sd = state(model)
    shapes = {k: v.shape for k, v in sd.items()}
    adapter = get_adapter("clip", keys, {**cfg.to_dict(), "ckptlens_towers": "vision,text"}, shapes=shapes)
    names = adapter.layer_names(keys, shapes)
    assert "text_model.encoder.layers.0.self_attn.head1.ov" in names  # 2 text heads
    assert "text_model.encoder.layers.0.self_attn.head2.ov" not in names
    assert "text_projection" in names
    module = "text_model.encoder.layers.0.self_attn"
    layer = model.text_model.encoder.layers[0].self_attn
    x, _, probs, y = run_attention(model.text_model, layer, torch.arange(3, 9)[None])
    p = head_pieces(adapter, keys, get, module)
    got, out, _ = rebuild(p, adapter.attention_weights(keys, get, module), x, causal=True)
    torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ckptlens_towers"):
        get_adapter("clip", keys, {"ckptlens_towers": ["audio"]})
