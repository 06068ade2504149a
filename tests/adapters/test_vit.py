"""ckptlens.adapters.vit on ViTModel / ViTForImageClassification built offline (tiny config, eager
attention, random weights and biases), read under the names transformers 5 saves
(``encoder.layer.{i}.attention.attention.query``) and under the ones it builds (``layers.{i}.attention.q_proj``).

The truth is the model's own attention on an image batch: the probabilities rebuilt from the
per-head q/k pieces (+ biases) equal those the layer returns, and the output rebuilt from q/k/v/o
and from the OV circuits (+ W_O·b_V + b_O) equals the attention module's output, to 1e-5 (float64
rebuild of a float32 model). Embeddings are [tokens, d] matrices; the patch convolution is a
[d, C·p·p] matrix that gives the convolution's output on the flattened patches."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import ViTAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.sources.layer_names import names_from_keys  # noqa: E402
from tests.adapters.rebuild import check_circuits, head_pieces, randomize, rebuild, run_attention  # noqa: E402

D, H, L, IMG, P, C = 32, 4, 2, 16, 4, 3
T = (IMG // P) ** 2 + 1


def _config():
    cfg = transformers.ViTConfig(
        hidden_size=D,
        num_hidden_layers=L,
        num_attention_heads=H,
        intermediate_size=64,
        image_size=IMG,
        patch_size=P,
        num_channels=C,
        num_labels=5,
    )
    cfg._attn_implementation = "eager"
    return cfg


def saved_state(model, tmp_path):
    """The state dict under the names ``save_pretrained`` writes."""
    from safetensors.numpy import load_file

    model.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    return list(sd), sd.__getitem__, sd


@pytest.fixture(scope="module", params=["ViTModel", "ViTForImageClassification"])
def vit(request):
    cfg = _config()
    return randomize(getattr(transformers, request.param)(cfg), seed=4), cfg


def _attn_modules(model):
    return [m for n, m in model.named_modules() if n.endswith(".attention") and hasattr(m, "q_proj")]


@pytest.mark.parametrize("layout", ["saved", "built"])
def test_vit_heads_rebuild_attention(vit, layout, tmp_path):
    model, cfg = vit
    if layout == "saved":
        keys, get, sd = saved_state(model, tmp_path)
        assert any(".attention.attention.query.weight" in k for k in keys)
    else:
        sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        keys, get = list(sd), sd.__getitem__
    shapes = {k: v.shape for k, v in sd.items()}
    adapter = get_adapter("auto", keys, cfg.to_dict(), shapes=shapes)
    assert isinstance(adapter, ViTAdapter) and adapter.n_heads == H
    modules = adapter.attention_modules(keys)
    assert len(modules) == L
    pixels = torch.randn(1, C, IMG, IMG, generator=torch.Generator().manual_seed(0))
    for module, layer in zip(modules, _attn_modules(model)):
        x, _pos, probs, y = run_attention(model, layer, pixels)
        assert x.shape == (T, D)
        p = head_pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        got, out, out_ov = rebuild(p, aw, x, causal=False)
        torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_ov, y, rtol=1e-5, atol=1e-5)
        check_circuits(p, aw)
        shp = adapter.head_shapes(keys, shapes, module)
        assert shp["q"] == (D // H, D) and shp["ov"] == (D, D)
        # negative control: the heads read in the wrong order give other outputs
        wrong = {(k, (h + 1) % H if k == "head" and w == "o" else h, w): v for (k, h, w), v in p.items()}
        assert not torch.allclose(rebuild(wrong, aw, x, causal=False)[1], y, atol=1e-3)


def test_vit_embeddings_are_token_matrices(vit, tmp_path):
    model, cfg = vit
    keys, get, sd = saved_state(model, tmp_path)
    adapter = get_adapter("auto", keys, cfg.to_dict(), shapes={k: v.shape for k, v in sd.items()})
    got = dict(adapter.weight_matrices(keys, get, ["**embeddings*"]))
    pre = "vit." if "vit.embeddings.cls_token" in keys else ""
    assert got[f"{pre}embeddings.cls_token"].shape == (1, D)
    pos = got[f"{pre}embeddings.position_embeddings"]
    assert pos.shape == (T, D)
    np.testing.assert_array_equal(pos, sd[f"{pre}embeddings.position_embeddings"][0])
    conv = got[f"{pre}embeddings.patch_embeddings.projection"]
    assert conv.shape == (D, C * P * P)
    emb = model.vit.embeddings if pre else model.embeddings
    pixels = torch.randn(2, C, IMG, IMG)
    with torch.no_grad():
        want = emb.patch_embeddings(pixels)  # [2, patches, d]
    patches = pixels.unfold(2, P, P).unfold(3, P, P)  # [2, C, 4, 4, P, P]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, -1, C * P * P)
    bias = sd[f"{pre}embeddings.patch_embeddings.projection.bias"]
    torch.testing.assert_close(patches @ torch.from_numpy(conv).T + torch.from_numpy(bias), want, rtol=1e-5, atol=1e-5)
    # the stable rank of the real [tokens, d] position matrix is not the 1 of a flattened row
    s = np.linalg.svd(pos, compute_uv=False)
    assert (s**2).sum() / s[0] ** 2 > 1.2


def test_vit_default_targets_and_blocks(tmp_path):
    cfg = _config()
    model = transformers.ViTForImageClassification(cfg)
    keys, _, sd = saved_state(model, tmp_path)
    names = names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()})
    t = default_targets(names, cfg.to_dict())
    assert t["activations"] == ["vit.encoder.layer.*"]
    assert "vit.encoder.layer.*.attention.head*.ov" in t["weights"]
    assert t["gradients"] == ["vit.encoder.layer.*.attention.output.dense", "vit.encoder.layer.*.output.dense"]
    assert "embed" not in names["weights"]
