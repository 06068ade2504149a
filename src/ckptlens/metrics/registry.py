"""The metric registry.

A *metric* is one decorated function. Metrics that read the same input and share work form a
*family*: the workflow runs one job per (run, checkpoint, family), builds one context object per
layer (which caches shared work such as a matrix's singular values) and evaluates every enabled
metric of the family on it. A metric that compares against another checkpoint declares that
reference ("final", "previous" or "initial"); the family job then receives that checkpoint's
extraction too.

Only numpy is imported here: metric jobs must stay cheap to start (no torch).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NEEDS = ("weights", "activations", "gradients")
REFERENCES = ("final", "previous", "initial")


@dataclass(frozen=True)
class Family:
    name: str
    needs: str
    context: Callable  # (array of one layer) -> context object handed to each metric
    description: str = ""


@dataclass(frozen=True)
class Metric:
    name: str
    family: str
    fn: Callable
    reference: str | None = None
    defaults: Mapping = field(default_factory=dict)
    description: str = ""


FAMILIES: dict[str, Family] = {}
METRICS: dict[str, Metric] = {}


class MetricConfigError(ValueError):
    """A metric name or parameter in the config is not valid; the message names the key."""


def family(name: str, needs: str, description: str = ""):
    """Register ``context`` as the per-layer context builder of family ``name``."""
    if needs not in NEEDS:
        raise ValueError(f"family {name!r}: needs must be one of {NEEDS}, not {needs!r}")

    def register(context: Callable) -> Callable:
        if name in FAMILIES:
            raise ValueError(f"family {name!r} is registered twice")
        FAMILIES[name] = Family(name, needs, context, description or (context.__doc__ or "").strip())
        return context

    return register


def metric(name: str, family: str, reference: str | None = None, description: str = "", **defaults):
    """Register ``fn(ctx, **params)`` (or ``fn(ctx, ref_ctx, **params)`` with a reference)."""
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"metric {name!r}: reference must be one of {REFERENCES}")

    def register(fn: Callable) -> Callable:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        if family not in FAMILIES:
            raise ValueError(f"metric {name!r}: family {family!r} is not registered (define it first)")
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        METRICS[name] = Metric(name, family, fn, reference, dict(defaults), doc)
        return fn

    return register


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise MetricConfigError(
            f"config key 'metrics.{name}': unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}"
        ) from None


def resolve_params(name: str, params: Mapping | None) -> dict:
    """Defaults of metric ``name`` overridden by ``params``; unknown parameters are an error."""
    m = get_metric(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(m.defaults))
    if unknown:
        allowed = ", ".join(sorted(m.defaults)) or "none"
        raise MetricConfigError(
            f"config key 'metrics.{name}.{unknown[0]}': metric {name!r} has no parameter {unknown[0]!r} "
            f"(parameters: {allowed})"
        )
    return {**m.defaults, **params}


def group_by_family(metric_names) -> dict[str, list[str]]:
    """Enabled metric names grouped by family, in a stable order."""
    out: dict[str, list[str]] = {}
    for name in metric_names:
        out.setdefault(get_metric(name).family, []).append(name)
    return {f: sorted(ms) for f, ms in sorted(out.items())}


def references_of(metric_names) -> list[str]:
    return sorted({get_metric(n).reference for n in metric_names} - {None})


def family_code_hash(family_name: str) -> str:
    """Hash of the source that computes a family: the modules defining its context and metrics,
    plus this registry (which runs them). Given to Snakemake as a parameter so that editing a
    metric's code reruns that family's jobs, and only those."""
    fam = FAMILIES[family_name]
    fns = [fam.context] + [m.fn for m in METRICS.values() if m.family == family_name]
    files = sorted({inspect.getsourcefile(f) for f in fns} | {__file__})
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    print(f"WARNING: {msg}", file=sys.stderr)


def compute_family(
    family_name: str,
    metrics: Mapping[str, Mapping],
    current: Mapping[str, np.ndarray],
    references: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    *,
    run: str = "",
    step: int = -1,
) -> list[dict]:
    """Evaluate the metrics ``{name: params}`` of one family on every layer of ``current``.

    ``current`` maps layer name -> array (read lazily: one layer at a time is enough);
    ``references`` maps "final"/"previous"/"initial" -> such a mapping. A metric whose reference is
    missing (e.g. "previous" at the first checkpoint) is skipped. Non-finite inputs or results give
    NaN with a warning naming run, step, layer and metric; they never abort the job.
    Returns tidy rows ``{run, step, layer, metric, value}``.
    """
    fam = FAMILIES[family_name]
    references = references or {}
    chosen = {name: resolve_params(name, p) for name, p in metrics.items()}
    for name in chosen:
        if METRICS[name].family != family_name:
            raise MetricConfigError(f"metric {name!r} belongs to family {METRICS[name].family!r}, not {family_name!r}")
    rows = []
    for layer in current.keys():
        x = np.asarray(current[layer])
        where = f"run {run!r}, step {step}, layer {layer!r}"
        finite = bool(np.isfinite(x).all())
        if not finite:
            _warn(f"{where}: input has NaN/Inf values; its {family_name} metrics are NaN")
        ctx = fam.context(x) if finite else None
        ref_ctx: dict[str, object] = {}
        for name, params in chosen.items():
            m = METRICS[name]
            args = []
            if m.reference is not None:
                ref_store = references.get(m.reference)
                if ref_store is None or layer not in ref_store:
                    continue
                if m.reference not in ref_ctx:
                    r = np.asarray(ref_store[layer])
                    ref_ctx[m.reference] = fam.context(r) if np.isfinite(r).all() else None
                    if ref_ctx[m.reference] is None:
                        _warn(f"{where}: {m.reference} reference has NaN/Inf values; {name} is NaN")
                args.append(ref_ctx[m.reference])
            value = math.nan
            if ctx is not None and all(a is not None for a in args):
                with np.errstate(all="ignore"):
                    value = float(m.fn(ctx, *args, **params))
                if not math.isfinite(value):
                    _warn(f"{where}: metric {name!r} is not finite ({value}); recorded as NaN")
                    value = math.nan
            rows.append({"run": run, "step": int(step), "layer": layer, "metric": name, "value": value})
    return rows
