"""The demo model (ckptlens.sources.trained.transformer): rotary scores depend only on relative
position, attention is causal."""

import torch

from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig, apply_rotary, rotary_cos_sin


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    dh, t = 8, 12
    q, k = torch.randn(dh), torch.randn(dh)
    cos, sin = rotary_cos_sin(t, dh, 10000.0)
    rq = apply_rotary(q.expand(t, dh), cos, sin)
    rk = apply_rotary(k.expand(t, dh), cos, sin)
    scores = rq @ rk.T  # [query position, key position]
    for offset in range(-3, 4):
        diag = torch.diagonal(scores, offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-5)
    # a rotation: norms are kept
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(t), atol=1e-5)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = AttnOnlyTransformer(ToyModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2))
    x = torch.randint(0, 10, (1, 9))
    y = x.clone()
    y[0, 6:] = (y[0, 6:] + 1) % 10
    assert torch.allclose(model(x)[0, :6], model(y)[0, :6], atol=1e-6)
    assert not torch.allclose(model(x)[0, 6:], model(y)[0, 6:])
