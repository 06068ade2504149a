"""A metric job's inputs: the extraction of its checkpoint and of the checkpoints its metrics
compare with — or, for a family reading weights, those checkpoints themselves through the
architecture adapter (:func:`ckptlens.extract.weights.open_weights`) — opened lazily; failed
checkpoints (failure records) are told apart here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..extract.weights import open_weights
from ..store.failures import checkpoint_record
from ..store.tensors import TensorFile
from .registry import Unavailable


def open_metric_inputs(paths: Mapping[str, str], group_gradients: bool = False, weights: Sequence[str] | None = None):
    """``{"current": path, <reference>: path}`` -> ``(current, references, record)``. ``record`` is
    the failure record when the current step failed (then nothing else is opened); a reference
    that is a record becomes an :class:`~ckptlens.metrics.registry.Unavailable`, so that metrics
    comparing with it are NaN with a warning. With ``weights`` (target patterns) the paths are
    checkpoints and their matching weight matrices are read; otherwise they are extractions, and
    activations stored compactly (float16, bfloat16) are read as float32."""

    def opened(path):
        if weights is not None:
            return open_weights(path, weights)
        return TensorFile(path, group_gradients=group_gradients, float16_as_float32=True)

    paths = dict(paths)
    rec = checkpoint_record(paths["current"])
    if rec is not None:
        return None, {}, rec
    current = opened(paths.pop("current"))
    refs = {}
    for name, p in paths.items():
        r = checkpoint_record(p)
        refs[name] = Unavailable(f"step {r.get('step')} failed: {r.get('file')}: {r.get('reason')}") if r else opened(p)
    return current, refs, None
