"""ckptlens.adapters.toy: the demo transformer's heads rebuild its attention output."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    ToyAdapter,
    get_adapter,
)
from tests.adapters.helpers import DH, D, H, L, V, _capture, _check_circuits, _check_layer_names, _pieces, _rebuild  # noqa: E402


# ---------------------------------------------------------------------------------------------
# toy: the project's attention-only transformer layout
class _ToyAttn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (torch.nn.Linear(D, D, bias=False) for _ in range(4))

    def forward(self, x):
        b, t, _ = x.shape
        heads = lambda y: y.view(b, t, H, DH).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(DH)
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        return self.o_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D))


class _ToyBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _ToyAttn()

    def forward(self, x):
        return x + self.attn(x)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, D)
        self.blocks = torch.nn.ModuleList(_ToyBlock() for _ in range(L))
        self.unembed = torch.nn.Linear(D, V, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.unembed(x)


TOY_META = {
    "ckptlens_arch": "toy",
    "ckptlens_model": json.dumps({"n_heads": H, "d_model": D, "n_layers": L, "vocab_size": V}),
}


def test_toy_heads_rebuild_attention_output(tmp_path):
    from safetensors.torch import save_file

    from ckptlens.sources.readers import open_checkpoint

    torch.manual_seed(0)
    model = _Toy().eval()
    path = tmp_path / "ckpt_10.safetensors"
    save_file(dict(model.state_dict()), str(path), metadata=TOY_META)
    keys, get, meta = open_checkpoint(path)
    adapter = get_adapter("auto", keys, metadata=meta)
    assert isinstance(adapter, ToyAdapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 8))
    for i in range(L):
        module = f"blocks.{i}.attn"
        x, y = _capture(model.blocks[i].attn, lambda: model(tokens))
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        torch.testing.assert_close(_rebuild(p, aw, x[0], causal=True), y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)
        # the spec's slicing: rows h·dh:(h+1)·dh of q/k/v, columns of o
        np.testing.assert_array_equal(p[1, "v"].float().numpy(), get(f"{module}.v_proj.weight")[DH : 2 * DH])
        np.testing.assert_array_equal(p[1, "o"].float().numpy(), get(f"{module}.o_proj.weight")[:, DH : 2 * DH])
    listed = _check_layer_names(adapter, keys, get)
    assert listed.count("embed") == 1  # the module is called "embed" already: no duplicate
    assert {"unembed", "blocks.1.attn.o_proj", "blocks.0.attn.head3.qk"} <= set(listed)
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["blocks.0", "blocks.1"]
    assert adapter.activation_modules(keys) == ["blocks.0", "blocks.1"]  # from state-dict keys too


def test_toy_real_model_if_available(tmp_path):
    """The project's own demo model (ckptlens.sources.trained.transformer), rotary included, saved with its metadata."""
    toy = pytest.importorskip("ckptlens.sources.trained.transformer")
    cfg = toy.ToyModelConfig(vocab_size=V, d_model=D, n_layers=L, n_heads=H)
    torch.manual_seed(1)
    model = toy.AttnOnlyTransformer(cfg).eval()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    keys = list(sd)
    adapter = get_adapter("auto", keys, metadata={"ckptlens_model": json.dumps(cfg.to_dict())})
    assert adapter.name == "toy" and adapter.n_heads == H
    x, y = _capture(model.blocks[0].attn, lambda: model(torch.randint(0, V, (1, 8))))
    cos, sin = toy.rotary_cos_sin(x.shape[1], DH, cfg.rotary_base)
    rope = lambda z: toy.apply_rotary(z.float(), cos, sin).double()  # noqa: E731
    p = _pieces(adapter, keys, sd.__getitem__, "blocks.0.attn")
    aw = adapter.attention_weights(keys, sd.__getitem__, "blocks.0.attn")
    torch.testing.assert_close(_rebuild(p, aw, x[0], causal=True, rope=rope), y[0], rtol=1e-4, atol=1e-5)


def test_toy_without_n_heads_warns_and_gives_no_heads():
    keys = [
        "embed.weight",
        "blocks.0.attn.q_proj.weight",
        "blocks.0.attn.k_proj.weight",
        "blocks.0.attn.v_proj.weight",
        "blocks.0.attn.o_proj.weight",
        "unembed.weight",
    ]
    with pytest.warns(UserWarning, match="number of attention heads unknown"):
        adapter = get_adapter("toy", keys, metadata={})
    assert not any(".head" in n for n in adapter.layer_names(keys))
    sd = {k: np.zeros((V if "embed" in k else D, D), np.float32) for k in keys}
    with pytest.raises(ValueError, match="n_heads"):
        list(adapter.weight_matrices(keys, sd.__getitem__, ["blocks.*.attn.head*.ov"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter = get_adapter("toy", keys, metadata={}, n_heads=2)
    assert "blocks.0.attn.head1.ov" in adapter.layer_names(keys)
