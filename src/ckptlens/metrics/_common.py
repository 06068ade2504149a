"""Small helpers shared by several metric modules: layer order, pair labels, quantile summaries,
parameter checks. numpy only.

Layer order
    Cross-layer metrics pair each layer with the next one in :func:`layer_order`: names are sorted
    by the first integer they contain ("blocks.2" < "blocks.10"); names with the same integer keep
    their given order; names without any integer keep their given place relative to the numbered
    ones (those given before the first numbered name come first, the others last), so "embed" given
    first stays first and "lm_head" given last stays last; a name containing "emb" (an embedding)
    always comes first, since stores often list names alphabetically ("blocks.*" before "embed").

Pair labels
    A value about two layers is labelled ``"<a>~<b>"`` (:data:`PAIR_SEP`), ``a`` being the earlier
    layer (or, for circuits, the reading side: "blocks.1.attn.head0.qk~blocks.0.attn.head3.ov").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from .registry import MetricConfigError

PAIR_SEP = "~"
_INT = re.compile(r"\d+")


def first_int(name: str) -> int | None:
    m = _INT.search(name)
    return int(m.group()) if m else None


def layer_order(names: Iterable[str]) -> list[str]:
    """Names in layer order (see the module docstring)."""
    names = list(names)
    first_numbered = next((i for i, n in enumerate(names) if first_int(n) is not None), len(names))

    def key(item):
        i, n = item
        k = first_int(n)
        if k is None:
            # an embedding comes first wherever it is listed (stores list names alphabetically:
            # "blocks.*" before "embed"); other unnumbered names keep their side
            first = i < first_numbered or "emb" in n.lower()
            return (-math.inf if first else math.inf, i)
        return (k, i)

    return [n for _, n in sorted(enumerate(names), key=key)]


def pair_label(a: str, b: str) -> str:
    return f"{a}{PAIR_SEP}{b}"


def quantile_key(q: float) -> str:
    """Suffix of a quantile in a metric name: 0.05 -> "p5", 0.5 -> "p50", 0.025 -> "p2.5"."""
    return f"p{100 * q:g}"


def pc_suffixes(params) -> list[str]:
    """``outputs=`` of a metric giving one value per principal component: pc1 … pc{n_components}."""
    return [f"pc{i + 1}" for i in range(int(params["n_components"]))]


def summarize(values: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    """{"mean": ..., "p5": ..., ...} of the finite entries of ``values`` (NaN if none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, **{quantile_key(q): math.nan for q in quantiles}}
    qs = np.quantile(v, list(quantiles)) if len(quantiles) else []
    return {"mean": float(v.mean()), **{quantile_key(q): float(x) for q, x in zip(quantiles, qs)}}


# ---- parameter checks (raise MetricConfigError naming the config key) ----


def _fail(name: str, key: str, msg: str):
    raise MetricConfigError(f"config key 'metrics.{name}.{key}': {msg}")


def check_positive_int(name: str, key: str, value, allow=()) -> None:
    if value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = f" or one of {list(allow)}" if allow else ""
        _fail(name, key, f"must be a positive integer{extra}, not {value!r}")


def check_int_list(name: str, key: str, value) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        _fail(name, key, f"must be a non-empty list of positive integers, not {value!r}")
    for v in value:
        check_positive_int(name, key, v)


def check_quantiles(name: str, value) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        _fail(name, "quantiles", f"must be a list of numbers in [0, 1], not {value!r}")
    for q in value:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
            _fail(name, "quantiles", f"must be a list of numbers in [0, 1], not {value!r}")


def check_choice(name: str, key: str, value, choices) -> None:
    if value not in choices:
        _fail(name, key, f"must be one of {list(choices)}, not {value!r}")
