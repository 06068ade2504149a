"""The ``attention`` family: per-head attention entropy against scipy (``scipy.special.entr``,
−p log p with 0 log 0 = 0, summed per row; ``scipy.stats.entropy`` where rows are exact), on the
input layout the extraction writes ([n_rows, n_heads, n_keys], masked keys at 0)."""

import math

import numpy as np
import pytest
from scipy.special import entr
from scipy.stats import entropy

from ckptlens import metrics as M


def causal_attention(n_seq=3, seq_len=7, heads=4, seed=0, dtype=np.float32):
    """Softmax rows of a causal mask for a few sequences, the real query rows stacked."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_seq):
        logits = rng.standard_normal((heads, seq_len, seq_len)) * rng.uniform(0.1, 4, (heads, 1, 1))
        logits[:, np.triu_indices(seq_len, 1)[0], np.triu_indices(seq_len, 1)[1]] = -np.inf
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        rows.append(p.transpose(1, 0, 2))  # [query, head, key]
    return np.concatenate(rows).astype(dtype)


def rows_of(store):
    out = M.compute_family("attention", {"attention_entropy": {}}, store)
    return {(r["layer"], r["metric"]): r["value"] for r in out}


def test_attention_entropy_matches_scipy_per_head():
    a = causal_attention()
    got = rows_of({"blocks.0.attn": a})
    heads = a.shape[1]
    # the rows as given (float32: sums 1 ± 1e-7; scipy.stats.entropy would renormalise them)
    per_head = [np.mean([entr(a[i, h].astype(np.float64)).sum() for i in range(len(a))]) for h in range(heads)]
    for h in range(heads):
        assert got[("blocks.0.attn", f"attention_entropy.head{h}")] == pytest.approx(per_head[h], rel=1e-12)
    assert got[("blocks.0.attn", "attention_entropy.mean")] == pytest.approx(np.mean(per_head), rel=1e-12)
    assert M.value_names("attention_entropy") == ["attention_entropy.mean"]  # heads known from the data


def test_known_entropies():
    one_hot = np.zeros((5, 1, 8))
    one_hot[:, 0, 2] = 1.0
    uniform = np.full((5, 1, 8), 1 / 8)
    got = rows_of({"one_hot": one_hot, "uniform": uniform})
    assert got[("one_hot", "attention_entropy.head0")] == 0.0
    assert got[("uniform", "attention_entropy.head0")] == pytest.approx(math.log(8)) == entropy(uniform[0, 0])


def test_bad_rows_are_nan_for_every_head_with_a_warning():
    a = causal_attention(heads=3)
    padded = a.copy()
    padded[0] = 0.0  # a padding row zeroed instead of left out
    with pytest.warns(RuntimeWarning, match=r"layer 'l'.*padding query rows must be left out"):
        got = rows_of({"l": padded})
    assert sorted(got) == [("l", f"attention_entropy.{s}") for s in ("head0", "head1", "head2", "mean")]
    assert all(math.isnan(v) for v in got.values())
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        nan_input = a.copy()
        nan_input[1, 1, 0] = np.nan
        got = rows_of({"l": nan_input})
    assert len(got) == 4 and all(math.isnan(v) for v in got.values())
    with pytest.warns(RuntimeWarning, match=r"\[rows, heads, keys\]"):
        assert math.isnan(rows_of({"l": a[:, 0]})[("l", "attention_entropy.mean")])


def test_attentions_is_an_extraction_kind():
    assert "attentions" in M.NEEDS and M.FAMILIES["attention"].needs == "attentions"
