"""The metric registry: what a metric is, how metrics share work, and how a job runs them.

* A *metric* is one function, registered with :func:`metric` under a unique name (no dot) with its
  axis label, an optional ``validate`` (raises :class:`MetricConfigError` naming the config key;
  runs when the config is read) and, for a metric giving several values, ``outputs`` (the suffixes
  it gives for given parameters: ``{suffix: value}`` becomes rows ``"<name>.<suffix>"``). Its
  parameters are the function's arguments after the context(s), with their defaults written there
  only (the registry reads them from the signature).
* Metrics that read the same input and share work form a *family* (:func:`family`), defined in the
  module named after it (its metrics take their family from that name): one job per
  (run, checkpoints, family) builds one *context* per layer — which caches shared work such as a
  matrix's singular values — and evaluates every enabled metric of the family on it. A family says
  what it ``needs`` (one of :data:`NEEDS`, an extraction kind) and its ``scope``: ``"layer"`` (the
  context sees one layer's array) or ``"model"`` (it sees every layer of the checkpoint at once,
  through a lazy :class:`LayerStore`, for cross-layer metrics whose labels fill the ``layer``
  column, pairs as ``"<a>~<b>"``).
* A metric comparing with other checkpoints declares them: ``reference="final"``, ``"previous"``,
  ``"initial"``, ``"previous2"`` (two back), or a tuple of them; it receives one reference context
  per entry, and is skipped where one is missing (``previous`` at the first checkpoint).
* Degenerate input never aborts a job: NaN/Inf input, a non-finite result, an SVD that does not
  converge (``LinAlgError``), a metric that raises :class:`Degenerate` (its value is undefined on
  this input: a zero matrix, constant activations, fewer samples than features, a fit that does
  not converge; the message says which) or an unavailable reference (its checkpoint failed:
  :class:`Unavailable`) give NaN with a warning naming run, step, layer and metric. A metric that
  returns a value but wants it flagged calls :func:`metric_warning` (same naming).
* ``outputs`` may take the input's shape as a second argument (``outputs(params, shape)``) when
  its suffixes depend on the data (one per attention head); it is then called with ``shape=None``
  where no input is at hand (:func:`value_names`).
* :func:`family_modules` names the modules a family's job runs, so that its code hash
  (:meth:`ckptlens.plan.Plan.code`) covers them and not the other families: editing one metric
  reruns only its family's jobs.

Only numpy is imported here: metric jobs must stay cheap to start (no torch).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from ..store.joblog import warn

NEEDS = (
    "weights",
    "activations",
    "gradients",
    "gradient_stats",
    "activation_gradients",
    "attentions",
    "similarity_terms",
)
REFERENCES = ("final", "previous", "initial", "previous2")
SCOPES = ("layer", "model")
SUFFIX_SEP = "."


@dataclass(frozen=True)
class Family:
    name: str
    needs: str
    context: Callable  # (array of one layer | LayerStore for scope="model") -> context object
    description: str = ""
    scope: str = "layer"
    #: (its enabled metrics {name: resolved params}) -> what the extraction keeps for them, where
    #: a kind has parts (the ``gradient_stats`` statistics); None: the whole kind
    statistics: Callable | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    family: str
    fn: Callable
    label: str  # axis label of its values in figures
    reference: str | None = None  # the first (usually only) reference
    defaults: Mapping = field(default_factory=dict)  # parameter -> default, read from fn's signature
    description: str = ""
    references: tuple = ()  # every reference, in the order fn receives their contexts
    validate: Callable | None = None  # (resolved params) -> None, raises MetricConfigError
    outputs: Callable | None = None  # (resolved params) -> suffixes of a multi-valued metric

    def __post_init__(self):
        if not self.references and self.reference is not None:
            object.__setattr__(self, "references", (self.reference,))


FAMILIES: dict[str, Family] = {}
METRICS: dict[str, Metric] = {}


class MetricConfigError(ValueError):
    """A metric name or parameter in the config is not valid; the message names the key."""


class Degenerate(ValueError):
    """Raised by a metric whose value is undefined on this input (the message says why): the job
    records NaN with a warning naming run, step, layer and metric, and goes on."""


#: "run 'r', step 3, layer 'l': metric 'm'" while a metric runs (for :func:`metric_warning`)
_RUNNING: ContextVar[str] = ContextVar("ckptlens_metric_running", default="")


def metric_warning(msg: str) -> None:
    """Warn about the value the running metric returns (it is kept), naming run, step, layer and
    metric; use :class:`Degenerate` instead when there is no value to keep."""
    warn(f"{_RUNNING.get() or 'metric'}: {msg}")


def family(name: str, needs: str, description: str = "", scope: str = "layer", statistics: Callable | None = None):
    """Register ``context`` as the context builder of family ``name``.

    ``scope="layer"`` (default): ``context(array)`` per layer. ``scope="model"``:
    ``context(LayerStore)`` once per checkpoint, for metrics that read several layers.
    ``statistics(metrics)``: which parts of its ``needs`` the enabled ``{metric: params}`` read
    (:attr:`Family.statistics`)."""
    if needs not in NEEDS:
        raise ValueError(f"family {name!r}: needs must be one of {NEEDS}, not {needs!r}")
    if scope not in SCOPES:
        raise ValueError(f"family {name!r}: scope must be one of {SCOPES}, not {scope!r}")

    def register(context: Callable) -> Callable:
        if name in FAMILIES:
            raise ValueError(f"family {name!r} is registered twice")
        doc = description or (context.__doc__ or "").strip()
        FAMILIES[name] = Family(name, needs, context, doc, scope, statistics)
        return context

    return register


def metric(
    name: str,
    family: str | None = None,
    *,
    label: str,
    reference: str | tuple | list | None = None,
    description: str = "",
    validate: Callable | None = None,
    outputs: Callable | None = None,
):
    """Register ``fn(ctx, **params)`` (or ``fn(ctx, ref_ctx, ..., **params)`` with references).

    ``family``: by default the name of the module defining ``fn`` (a family's module is named after
    it); given only for a metric defined elsewhere. ``label``: how figures name its values on an
    axis ("Frobenius norm ‖W‖_F"). ``reference``: None, one of REFERENCES, or a tuple of them.
    ``validate``/``outputs``: see the module docstring. The parameters and their defaults are
    ``fn``'s (:func:`_signature_defaults`)."""
    if SUFFIX_SEP in name:
        raise ValueError(f"metric {name!r}: names may not contain {SUFFIX_SEP!r}")
    refs = () if reference is None else (reference,) if isinstance(reference, str) else tuple(reference)
    for r in refs:
        if r not in REFERENCES:
            raise ValueError(f"metric {name!r}: reference must be one of {REFERENCES}, not {r!r}")

    def register(fn: Callable) -> Callable:
        fam = family or fn.__module__.rpartition(".")[2]
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        if fam not in FAMILIES:
            how = "define it first" if family else "its module's name; define it first or pass family="
            raise ValueError(f"metric {name!r}: family {fam!r} is not registered ({how})")
        defaults = _signature_defaults(name, fn, len(refs))
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        METRICS[name] = Metric(name, fam, fn, label, refs[0] if refs else None, defaults, doc, refs, validate, outputs)
        return fn

    return register


def _signature_defaults(name: str, fn: Callable, n_references: int) -> dict:
    """``fn``'s parameters and their defaults: the arguments with a default, after the context and
    one per reference (which have none). A tuple default (immutable in the signature) is given as a
    list, the form a parameter has in the config (YAML/JSON)."""
    args = list(inspect.signature(fn).parameters.values())
    inputs = [a.name for a in args if a.default is inspect.Parameter.empty]
    if len(inputs) != 1 + n_references:
        raise ValueError(
            f"metric {name!r}: takes the context and one per reference ({1 + n_references} arguments) "
            f"before its parameters, which need defaults; its arguments without a default: {inputs}"
        )
    return {
        a.name: list(a.default) if isinstance(a.default, tuple) else a.default
        for a in args
        if a.default is not inspect.Parameter.empty
    }


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise MetricConfigError(
            f"config key 'metrics.{name}': unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}"
        ) from None


def resolve_params(name: str, params: Mapping | None) -> dict:
    """Defaults of metric ``name`` overridden by ``params``; unknown or invalid parameters are an error."""
    m = get_metric(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(m.defaults))
    if unknown:
        allowed = ", ".join(sorted(m.defaults)) or "none"
        raise MetricConfigError(
            f"config key 'metrics.{name}.{unknown[0]}': metric {name!r} has no parameter {unknown[0]!r} "
            f"(parameters: {allowed})"
        )
    resolved = {**m.defaults, **params}
    if m.validate is not None:
        m.validate(resolved)
    return resolved


def split_metric_name(label: str) -> tuple[str, str | None]:
    """``"linearity_per_sample.p50"`` -> ``("linearity_per_sample", "p50")``; plain names -> (name, None)."""
    base, sep, suffix = label.partition(SUFFIX_SEP)
    return base, (suffix if sep else None)


def _outputs(m: Metric, params: Mapping, shape=None) -> list[str]:
    """The suffixes of a multi-valued metric; ``outputs(params, shape)`` where it takes the shape."""
    if _takes_shape(m):
        return list(m.outputs(params, shape))
    return list(m.outputs(params))


def _takes_shape(m: Metric) -> bool:
    return m.outputs is not None and len(inspect.signature(m.outputs).parameters) >= 2


def values_depend_on_input(name: str) -> bool:
    """Whether some of a metric's values are known only from its input (one per attention head):
    :func:`value_names` then lists the others, and a config naming one of the rest cannot be
    checked before the data exist."""
    return _takes_shape(get_metric(name))


def value_names(name: str, params: Mapping | None = None) -> list[str]:
    """The row names ``"<name>.<suffix>"`` of a multi-valued metric with its parameters; ``[]`` for
    a metric giving one value (or one that does not declare its suffixes). For a metric whose
    suffixes depend on the input (``outputs(params, shape)``), those it gives without one."""
    m = get_metric(name)
    if m.outputs is None:
        return []
    return [f"{name}{SUFFIX_SEP}{s}" for s in _outputs(m, resolve_params(name, params))]


def group_by_family(metric_names) -> dict[str, list[str]]:
    """Enabled metric names grouped by family, in a stable order."""
    out: dict[str, list[str]] = {}
    for name in metric_names:
        out.setdefault(get_metric(name).family, []).append(name)
    return {f: sorted(ms) for f, ms in sorted(out.items())}


def references_of(metric_names) -> list[str]:
    return sorted({r for n in metric_names for r in get_metric(n).references})


def family_modules(family_name: str) -> list[str]:
    """The modules defining a family's context and its metrics: the kinds of this registry a
    metric job of the family runs (:func:`ckptlens.store.codehash.job_code`)."""
    fam = FAMILIES[family_name]
    fns = [fam.context] + [m.fn for m in METRICS.values() if m.family == family_name]
    return sorted({f.__module__ for f in fns})


@dataclass(frozen=True)
class Unavailable:
    """A reference checkpoint that exists in the run but could not be read (``reason``)."""

    reason: str


def _warn_unavailable(references, chosen, where) -> None:
    for ref, store in references.items():
        if isinstance(store, Unavailable):
            users = [n for n in chosen if ref in METRICS[n].references]
            if users:
                warn(
                    f"{where}: the {ref} reference is unavailable ({store.reason}); {', '.join(users)} "
                    f"recorded as NaN on every layer"
                )


class LayerStore(Mapping):
    """What a model-scope context receives: the checkpoint's layers, read lazily.

    ``store[name]`` is the array as stored (its dtype kept), or ``None`` if it has NaN/Inf values
    (warned once, naming run, step and layer); iteration gives the layer names in stored order."""

    def __init__(self, mapping: Mapping, where: str = ""):
        self._m = mapping
        self.where = where
        self._bad: set[str] = set()
        self._keys = list(iter(mapping))  # names only: `in` must not read a tensor
        self._key_set = set(self._keys)

    def __getitem__(self, key: str):
        if key in self._bad:
            return None
        x = np.asarray(self._m[key])
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            self._bad.add(key)
            warn(f"{self.where}, layer {key!r}: input has NaN/Inf values; metrics reading it are NaN")
            return None
        return x

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._key_set


def _rows(run, step, layer, name, out, where, warn_nonfinite=True) -> list[dict]:
    """Rows of one metric's result on one layer/label: a number, or {suffix: number}; non-finite
    values become NaN, with a warning unless ``warn_nonfinite`` is False (the cause was warned
    already)."""
    items = [(f"{name}{SUFFIX_SEP}{k}", v) for k, v in out.items()] if isinstance(out, Mapping) else [(name, out)]
    rows = []
    for metric_name, v in items:
        value = math.nan if v is None else float(v)
        if not math.isfinite(value):
            if warn_nonfinite:
                warn(f"{where}: metric {metric_name!r} is not finite ({value}); recorded as NaN")
            value = math.nan
        rows.append({"run": run, "step": int(step), "layer": layer, "metric": metric_name, "value": value})
    return rows


def _call(m: Metric, args, params, where):
    token = _RUNNING.set(f"{where}: metric {m.name!r}")
    try:
        with np.errstate(all="ignore"):
            return m.fn(*args, **params)
    except np.linalg.LinAlgError as exc:
        warn(f"{where}: metric {m.name!r} failed ({exc}); recorded as NaN")
        return None
    except Degenerate as exc:
        warn(f"{where}: metric {m.name!r} is undefined here ({exc}); recorded as NaN")
        return None
    finally:
        _RUNNING.reset(token)


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
    ``references`` maps "final"/"previous"/"initial"/"previous2" -> such a mapping. A metric whose
    reference is missing (e.g. "previous" at the first checkpoint) is skipped. Non-finite inputs or
    results give NaN with a warning naming run, step, layer and metric; they never abort the job.
    Returns tidy rows ``{run, step, layer, metric, value}``.

    For a model-scope family the context is built once from ``LayerStore(current)`` (and each
    reference's from ``LayerStore(reference)``); each metric returns ``{label: value}`` (or
    ``{label: {suffix: value}}``) and the label fills the ``layer`` column. A metric returning
    ``{suffix: value}`` gives rows named ``"<metric>.<suffix>"`` (see the module docstring).
    """
    fam = FAMILIES[family_name]
    references = references or {}
    chosen = {name: resolve_params(name, p) for name, p in metrics.items()}
    for name in chosen:
        if METRICS[name].family != family_name:
            raise MetricConfigError(f"metric {name!r} belongs to family {METRICS[name].family!r}, not {family_name!r}")
    _warn_unavailable(references, chosen, f"run {run!r}, step {step}")
    if fam.scope == "model":
        return _compute_model_family(fam, chosen, current, references, run, step)
    # layer names of each reference, read once (a lazy Mapping's `in` may read the tensor itself)
    ref_names = {
        ref: set(iter(store))
        for ref, store in references.items()
        if store is not None and not isinstance(store, Unavailable)
    }
    rows = []
    for layer in current.keys():
        x = np.asarray(current[layer])
        where = f"run {run!r}, step {step}, layer {layer!r}"
        finite = bool(np.isfinite(x).all())
        if not finite:
            warn(f"{where}: input has NaN/Inf values; its {family_name} metrics are NaN")
        ctx = fam.context(x) if finite else None
        ref_ctx: dict[str, object] = {}
        for name, params in chosen.items():
            m = METRICS[name]
            args = []
            for ref in m.references:
                ref_store = references.get(ref)
                if isinstance(ref_store, Unavailable):  # warned once above: NaN, no per-layer warning
                    args.append(None)
                    continue
                if ref_store is None or layer not in ref_names[ref]:
                    break
                if ref not in ref_ctx:
                    r = np.asarray(ref_store[layer])
                    ref_ctx[ref] = fam.context(r) if np.isfinite(r).all() else None
                    if ref_ctx[ref] is None:
                        warn(f"{where}: {ref} reference has NaN/Inf values; metrics comparing to it are NaN")
                args.append(ref_ctx[ref])
            else:
                out = None
                if ctx is not None and all(a is not None for a in args):
                    out = _call(m, [ctx, *args], params, where)
                computed = out is not None
                if not computed and m.outputs is not None:
                    out = {k: math.nan for k in _outputs(m, params, x.shape)}
                rows += _rows(run, step, layer, name, out, where, warn_nonfinite=computed)
    return rows


def _compute_model_family(fam, chosen, current, references, run, step) -> list[dict]:
    where = f"run {run!r}, step {step}"
    ctx = fam.context(LayerStore(current, where))
    ref_ctx: dict[str, object] = {}
    rows = []
    for name, params in chosen.items():
        m = METRICS[name]
        if any(references.get(ref) is None or isinstance(references[ref], Unavailable) for ref in m.references):
            continue  # model-scope labels are unknown without the reference: no rows (warned above)
        for ref in m.references:
            if ref not in ref_ctx:
                ref_ctx[ref] = fam.context(LayerStore(references[ref], f"{where} ({ref} reference)"))
        out = _call(m, [ctx, *(ref_ctx[r] for r in m.references)], params, where)
        for label, value in (out or {}).items():
            rows += _rows(run, step, label, name, value, f"{where}, layer {label!r}")
    return rows
