"""ckptlens.adapters.open_clip on open_clip-style state dicts, built here (open_clip is not a
dependency): the reference is a plain torch re-implementation of open_clip's ``VisionTransformer``
whose blocks are ``ResidualAttentionBlock``s around torch's own ``nn.MultiheadAttention`` (its
``in_proj_weight`` / ``out_proj`` are exactly the tensors open_clip saves), so the truth is torch's
attention forward. Per-head probabilities and the attention output rebuilt from the pieces, and
the output from the OV circuits (+ W_O·b_V + b_O), equal torch's to 1e-5; the patch convolution,
class/position embeddings and ``proj`` act as the [out, in] matrices the adapter yields."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from ckptlens.adapters import OpenCLIPAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.sources.layer_names import names_from_keys  # noqa: E402
from tests.adapters.rebuild import check_circuits, head_pieces, rebuild  # noqa: E402

D, H, L, IMG, P, OUT = 32, 4, 2, 16, 4, 24
T = (IMG // P) ** 2 + 1


class ResidualAttentionBlock(nn.Module):
    """open_clip.transformer.ResidualAttentionBlock (no layer scale, GELU MLP)."""

    def __init__(self, d, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(d, 4 * d))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * d, d))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, d, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(d, heads) for _ in range(layers)])

    def forward(self, x):
        for b in self.resblocks:
            x = b(x)
        return x


class VisionTransformer(nn.Module):
    """open_clip.transformer.VisionTransformer: conv1 (no bias), class + positional embeddings,
    ln_pre, the blocks, ln_post on the class token, x @ proj."""

    def __init__(self, d=D, layers=L, heads=H, image=IMG, patch=P, out=OUT):
        super().__init__()
        self.conv1 = nn.Conv2d(3, d, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d) * 0.3)
        self.positional_embedding = nn.Parameter(torch.randn((image // patch) ** 2 + 1, d) * 0.3)
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = Transformer(d, layers, heads)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(torch.randn(d, out) * 0.3)

    def tokens(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [b, patches, d]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)

    def forward(self, x):
        x = self.transformer(self.tokens(x))
        return self.ln_post(x[:, 0]) @ self.proj


def open_clip_state(seed=0, prefix="model.", text=True):
    """A CLIP-like state dict: ``{prefix}visual.*`` plus (``text``) a text tower at the root."""
    torch.manual_seed(seed)
    visual = VisionTransformer()
    with torch.no_grad():
        for p in visual.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    sd = {f"{prefix}visual.{k}": v.detach().numpy().copy() for k, v in visual.state_dict().items()}
    if text:
        tt = Transformer(16, 1, 2)
        sd |= {f"{prefix}transformer.{k}": v.detach().numpy().copy() for k, v in tt.state_dict().items()}
        sd[f"{prefix}token_embedding.weight"] = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
        sd[f"{prefix}positional_embedding"] = np.zeros((8, 16), np.float32)
        sd[f"{prefix}ln_final.weight"] = np.ones(16, np.float32)
        sd[f"{prefix}text_projection"] = np.zeros((16, OUT), np.float32)
        sd[f"{prefix}logit_scale"] = np.array(2.0, np.float32)
    return visual.eval(), sd


def _adapter(sd, **kw):
    return get_adapter("auto", list(sd), kw.pop("metadata", {}), shapes={k: v.shape for k, v in sd.items()}, **kw)


@pytest.mark.parametrize("prefix", ["model.", "", "module."])
def test_open_clip_heads_rebuild_torch_attention(prefix):
    visual, sd = open_clip_state(prefix=prefix)
    keys, get = list(sd), sd.__getitem__
    adapter = _adapter(sd, n_heads=H)
    assert isinstance(adapter, OpenCLIPAdapter) and adapter.n_heads == H
    modules = adapter.attention_modules(keys)
    assert modules == [f"{prefix}visual.transformer.resblocks.{i}.attn" for i in range(L)]  # no text blocks
    x = visual.tokens(torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        for i, module in enumerate(modules):
            block = visual.transformer.resblocks[i]
            y_in = block.ln_1(x)
            y, probs = block.attn(y_in, y_in, y_in, need_weights=True, average_attn_weights=False)
            p = head_pieces(adapter, keys, get, module)
            aw = adapter.attention_weights(keys, get, module)
            got, out, out_ov = rebuild(p, aw, y_in[0].double(), causal=False)
            torch.testing.assert_close(got, probs[0].double(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out, y[0].double(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out_ov, y[0].double(), rtol=1e-5, atol=1e-5)
            check_circuits(p, aw)
            # negative control: the fused rows read as [heads, 3, dh] (GPT-NeoX's layout) are wrong
            w = sd[f"{module}.in_proj_weight"].reshape(H, 3, D // H, D)
            bad = {**p, ("head", 1, "q"): torch.from_numpy(w[1, 0]).double()}
            assert not torch.allclose(rebuild(bad, aw, y_in[0].double(), causal=False)[0], probs[0].double(), atol=1e-3)
            x = block(x)


def test_open_clip_matrices_names_and_targets():
    visual, sd = open_clip_state()
    keys, get = list(sd), sd.__getitem__
    adapter = _adapter(sd, n_heads=H)
    w = dict(adapter.weight_matrices(keys, get, ["**"]))
    assert not any(n.startswith(("model.transformer", "model.token", "model.text", "model.ln_final")) for n in w)
    assert "embed" not in w and "model.logit_scale" not in w
    assert w["model.visual.transformer.resblocks.0.attn.in_proj"].shape == (3 * D, D)
    assert "model.visual.transformer.resblocks.0.attn.in_proj_weight" not in w
    assert w["model.visual.class_embedding"].shape == (1, D)
    assert w["model.visual.positional_embedding"].shape == (T, D)
    conv = w["model.visual.conv1"]
    assert conv.shape == (D, 3 * P * P)
    pix = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        want = visual.conv1(pix).flatten(2).transpose(1, 2)
    patches = pix.unfold(2, P, P).unfold(3, P, P).permute(0, 2, 3, 1, 4, 5).reshape(2, -1, 3 * P * P)
    torch.testing.assert_close(patches @ torch.from_numpy(conv).T, want, rtol=1e-5, atol=1e-5)
    proj = w["model.visual.proj"]
    assert proj.shape == (OUT, D)  # [out, in]: proj · x = x @ visual.proj
    v = np.random.default_rng(1).normal(size=D).astype(np.float32)
    np.testing.assert_allclose(proj @ v, v @ sd["model.visual.proj"], rtol=1e-5, atol=1e-5)
    assert sorted(adapter.layer_names(keys)) == sorted(w)
    # defaults: the vision blocks, not the text tower's transformer.resblocks.*
    names = names_from_keys(keys, {"config": {"heads": H}}, {k: v.shape for k, v in sd.items()})
    t = default_targets(names)
    assert t["activations"] == ["model.visual.transformer.resblocks.*"]
    assert "model.visual.transformer.resblocks.*.attn.head*.ov" in t["weights"]
    assert t["gradients"] == [
        "model.visual.transformer.resblocks.*.attn.out_proj",
        "model.visual.transformer.resblocks.*.mlp.c_proj",
    ]


def test_open_clip_heads_from_width_and_text_tower_on_request():
    visual, sd = open_clip_state()
    # no n_heads, no config: open_clip's head width 64 (D = 32 is not a multiple: heads unknown)
    with pytest.warns(UserWarning, match="number of attention heads unknown"):
        assert _adapter(sd).n_heads is None
    big = {"visual.transformer.resblocks.0.attn.in_proj_weight": np.zeros((3 * 128, 128), np.float32)}
    big |= {"visual.transformer.resblocks.0.attn.out_proj.weight": np.zeros((128, 128), np.float32)}
    big |= {"visual.transformer.resblocks.0.mlp.c_fc.weight": np.zeros((512, 128), np.float32)}
    a = _adapter(big)
    assert a.n_heads == 2 and any("head width 64" in n for n in a.notes())
    both = _adapter(sd, n_heads=H, metadata={"ckptlens_towers": ["vision", "text"]})
    names = both.layer_names(list(sd), {k: v.shape for k, v in sd.items()})
    assert "model.transformer.resblocks.0.attn.in_proj" in names and "model.text_projection" in names
    assert "embed" in names
    assert both.transposed("model.text_projection")


def test_open_clip_epoch_file_with_module_prefix_and_optimizer(tmp_path):
    """open_clip's own ``epoch_N.pt``: {epoch, name, state_dict (``module.`` prefix), optimizer}."""
    from ckptlens.sources.readers import open_checkpoint

    _, sd = open_clip_state(prefix="module.", text=False)
    obj = {
        "epoch": 3,
        "name": "run",
        "state_dict": {k: torch.from_numpy(v) for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
    }
    torch.save(obj, tmp_path / "epoch_3.pt")
    with open_checkpoint(tmp_path / "epoch_3.pt") as ck:
        keys = list(ck.keys)
        assert "visual.conv1.weight" in keys
        a = get_adapter("auto", keys, ck.metadata, shapes=ck.shapes, n_heads=H)
        assert a.name == "open_clip"
        assert "visual.transformer.resblocks.1.attn.head3.ov" in a.layer_names(keys, ck.shapes)
