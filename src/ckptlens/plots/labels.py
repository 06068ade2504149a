"""How figures name metrics on an axis.

A registered metric's label is an argument of its ``@metric(..., label=...)`` decorator
(:data:`ckptlens.metrics.METRICS`); the metrics of published tables have theirs in
:data:`ckptlens.sources.table.PUBLISHED_METRICS`. Both are looked up when a label is asked for
(importing this module imports neither).
"""

from __future__ import annotations


def _label_of(name: str) -> str | None:
    from ..metrics import METRICS
    from ..sources.table import PUBLISHED_METRICS

    registered = METRICS.get(name)
    if registered is not None and getattr(registered, "label", None):
        return registered.label
    return PUBLISHED_METRICS.get(name)


def metric_label(metric: str) -> str:
    """The axis label of a metric: the registered metric's label, else a published-table metric's,
    else the name itself; a value ``"<metric>.<suffix>"`` of a multi-valued metric gets its
    metric's label with the suffix in parentheses.

    ``"cka_to_final"`` -> ``"linear CKA to the final checkpoint"``;
    ``"qk_ov_token_mismatch.k8"`` -> ``"token mismatch ratio (k8)"``; unknown names unchanged."""
    metric = str(metric)
    label = _label_of(metric)
    if label:
        return label
    base, sep, suffix = metric.partition(".")
    if sep:
        label = _label_of(base)
        if label:
            return f"{label} ({suffix})"
    return metric


def axis_label(metric: str, log: bool = False, width: int = 40) -> str:
    """The y-axis label of a metric: its readable name (:func:`metric_label`), the scale, and line
    breaks so that a long name fits beside a panel."""
    import textwrap

    return textwrap.fill(metric_label(metric) + (" (log scale)" if log else ""), width)
