"""Attention-pattern metrics (family ``attention``, input: the ``attentions`` extraction).

Input layout, one array per attention module, keyed by the module's name (``blocks.0.attn``,
``gpt_neox.layers.3.attention``): shape [n_rows, n_heads, n_keys], one row per real (non-padding)
query position of the probe batch, and each [row, head, :] a probability distribution over the key
positions (masked, padded or future keys have probability 0). Padding query rows must be left out
by the extraction: transformers gives them a uniform row (log n_keys of entropy), which this
family cannot tell from a real one.

Registered metrics (no reference):
    attention_entropy   per head h: H_h = mean over rows of −Σ_k p_k log p_k (nats; 0·log 0 = 0),
                        as ``.head0`` … ``.head{H−1}``, and ``.mean`` = the mean over heads.
                        H = 0: every query attends to one key; H = log n: uniform over n keys.

The per-head attention entropy is the quantity of Clark et al. 2019 ("What Does BERT Look At?",
§3, the entropy of each head's attention distribution averaged over tokens) and of Zhai et al. 2023
("Stabilizing Transformer Training by Preventing Attention Entropy Collapse", ICML, eq. 2, whose
"entropy collapse" is this value falling towards 0). Computed in float64 (bf16/fp16 attentions are
widened first). Rows that are not probability distributions (a negative entry, or a sum off 1 by
more than 0.01: e.g. padding rows zeroed instead of left out) make the layer NaN with a warning, as
does an array that is not 3-D or has no rows.
"""

from __future__ import annotations

import numpy as np

from .registry import Degenerate, family, metric

ROW_SUM_TOLERANCE = 0.01  # bf16 probabilities sum to 1 within ~0.004


@family("attention", needs="attentions")
class AttentionContext:
    """One attention module's probabilities [n_rows, n_heads, n_keys] on the probe batch."""

    def __init__(self, a: np.ndarray):
        self.a = np.asarray(a)

    def entropy_per_head(self) -> np.ndarray:
        a = self.a
        if a.ndim != 3:
            raise Degenerate(f"attention input must be [rows, heads, keys], not of shape {a.shape}")
        rows, heads, keys = a.shape
        if rows == 0 or heads == 0 or keys == 0:
            raise Degenerate(f"no attention rows to average (shape {a.shape})")
        total = np.zeros(heads)
        step = max(1, (1 << 22) // (heads * keys))
        for start in range(0, rows, step):
            p = np.asarray(a[start : start + step], dtype=np.float64)
            if np.any(p < 0):
                raise Degenerate("negative attention probabilities")
            sums = p.sum(axis=2)
            worst = float(np.max(np.abs(sums - 1)))
            if worst > ROW_SUM_TOLERANCE:
                raise Degenerate(
                    f"attention rows must sum to 1 (one sums to {float(sums.flat[np.argmax(np.abs(sums - 1))]):.4g}): "
                    "padding query rows must be left out"
                )
            logp = np.log(np.where(p > 0, p, 1.0))
            total += -(p * logp).sum(axis=2).sum(axis=0)
        return total / rows


def _head_outputs(params, shape=None) -> list[str]:
    """``.head{h}`` for each head of the input (when its shape is known) and ``.mean``."""
    heads = int(shape[1]) if shape is not None and len(shape) == 3 else 0
    return [f"head{h}" for h in range(heads)] + ["mean"]


@metric("attention_entropy", label="attention entropy per head (nats)", outputs=_head_outputs)
def attention_entropy(ctx: AttentionContext) -> dict:
    """Per head, the mean over query rows of the attention distribution's entropy −Σ p log p."""
    h = ctx.entropy_per_head()
    return {**{f"head{i}": float(v) for i, v in enumerate(h)}, "mean": float(h.mean())}
