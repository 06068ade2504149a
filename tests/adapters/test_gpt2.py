"""ckptlens.adapters.gpt2: Conv1D weights transposed to (out, in), heads that rebuild the attention output."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    GPT2Adapter,
    get_adapter,
)
from tests.adapters.helpers import (  # noqa: E402
    DH,
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


def test_gpt2_heads_rebuild_attention_output(gpt2):
    model, cfg = gpt2
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, GPT2Adapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 9), generator=torch.Generator().manual_seed(2))
    for i in range(L):
        module = f"transformer.h.{i}.attn"
        x, y = _capture(model.transformer.h[i].attn, lambda: model(tokens))
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        torch.testing.assert_close(_rebuild(p, aw, x[0], causal=True), y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)


def test_gpt2_untransposed_split_is_wrong(gpt2):
    """Negative control: taking heads from the stored [in, out] Conv1D matrix without transposing."""
    model, cfg = gpt2
    keys, get, _ = _state(model)
    adapter = get_adapter("gpt2", keys, metadata=cfg.to_dict())
    module = "transformer.h.0.attn"
    x, y = _capture(model.transformer.h[0].attn, lambda: model(torch.arange(9)[None]))
    aw = adapter.attention_weights(keys, get, module)
    raw = torch.from_numpy(get(f"{module}.c_attn.weight")).double()  # [d, 3d], not transposed
    wrong = {(h, pc): raw[h * DH : (h + 1) * DH, j * D : (j + 1) * D] for h in range(H) for j, pc in enumerate("qkv")}
    for h in range(H):
        wrong[h, "o"] = torch.from_numpy(aw.W_O[h]).double()
    assert not torch.allclose(_rebuild(wrong, aw, x[0], causal=True), y[0], rtol=1e-3, atol=1e-3)


def test_gpt2_conv1d_weights_are_transposed_to_out_in(gpt2):
    model, cfg = gpt2
    keys, get, sd = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    mats = dict(adapter.weight_matrices(keys, get, ["transformer.h.0.*", "embed"]))
    assert mats["transformer.h.0.attn.c_attn"].shape == (3 * D, D)  # stored [D, 3D]
    assert mats["transformer.h.0.mlp.c_fc"].shape == (4 * D, D)  # stored [D, 4D]
    assert mats["transformer.h.0.mlp.c_proj"].shape == (D, 4 * D)
    np.testing.assert_array_equal(mats["embed"], sd["transformer.wte.weight"])  # embedding: not transposed
    names = _check_plain_weights(adapter, model, keys, get)  # x @ W.T + b == Conv1D(x) for all of them
    assert "transformer.h.1.attn.c_proj" in names and "lm_head" in names
    _check_layer_names(adapter, keys, get)
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["transformer.h.0", "transformer.h.1"]
