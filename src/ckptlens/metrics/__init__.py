"""Metric registry and the metrics that ship with ckptlens (numpy only: no torch here)."""

from .registry import (  # noqa: F401
    FAMILIES,
    METRICS,
    MetricConfigError,
    compute_family,
    family,
    family_code_hash,
    get_metric,
    group_by_family,
    metric,
    references_of,
    resolve_params,
)

# Importing the modules registers their families and metrics.
from . import weights, gradients, activations  # noqa: E402,F401
