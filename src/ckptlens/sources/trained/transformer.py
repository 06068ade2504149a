"""Attention-only transformer with rotary positions (the demo model).

Module names are part of the contract with the `toy` adapter and the config's target patterns:
``embed``, ``blocks.{i}`` (output = residual stream after block i),
``blocks.{i}.attn.{q_proj,k_proj,v_proj,o_proj}`` (bias-free linear maps; head h owns rows
h·d_head:(h+1)·d_head of q/k/v and the same columns of o), ``unembed``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .configs import ToyModelConfig


def rotary_cos_sin(seq_len: int, d_head: int, base: float, device=None):
    """cos/sin tables [seq_len, d_head/2] for rotating consecutive pairs of q/k features."""
    inv_freq = base ** (-torch.arange(0, d_head, 2, device=device, dtype=torch.float32) / d_head)
    angles = torch.arange(seq_len, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (2i, 2i+1) of x [..., T, d_head] by position-dependent angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    """Causal multi-head attention with rotary q/k. With ``keep_pattern`` set, a forward pass keeps
    its attention probabilities [batch, heads, query, key] in ``pattern`` (for the attention
    extraction; off in training)."""

    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        self.cfg = cfg
        self.keep_pattern = False
        self.pattern: torch.Tensor | None = None
        d = cfg.d_model
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, dh = self.cfg.n_heads, self.cfg.d_head

        def heads(y):
            return y.view(b, t, h, dh).transpose(1, 2)  # [b, h, t, dh]

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        cos, sin = rotary_cos_sin(t, dh, self.cfg.rotary_base, x.device)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        probs = scores.softmax(dim=-1)
        if self.keep_pattern:
            self.pattern = probs.detach()
        out = probs @ v  # [b, h, t, dh]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        self.attn = Attention(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x)


class AttnOnlyTransformer(nn.Module):
    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError("d_model must split into n_heads heads of even dimension (rotary pairs)")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)
