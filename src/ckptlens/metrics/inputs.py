"""A metric job's inputs: the extraction of its checkpoint and of the checkpoints its metrics
compare with, opened lazily; failed checkpoints (failure records) are told apart here."""

from __future__ import annotations

from collections.abc import Mapping

from ..store.failures import checkpoint_record
from ..store.tensors import TensorFile
from .registry import Unavailable


def open_metric_inputs(paths: Mapping[str, str], group_gradients: bool = False):
    """``{"current": path, <reference>: path}`` -> ``(current, references, record)``. ``record`` is
    the failure record when the current step failed (then nothing else is opened); a reference
    that is a record becomes an :class:`~ckptlens.metrics.registry.Unavailable`, so that metrics
    comparing with it are NaN with a warning. Activations stored compactly (float16, bfloat16)
    are read as float32."""
    paths = dict(paths)
    rec = checkpoint_record(paths["current"])
    if rec is not None:
        return None, {}, rec
    current = TensorFile(paths.pop("current"), group_gradients=group_gradients, float16_as_float32=True)
    refs = {}
    for name, p in paths.items():
        r = checkpoint_record(p)
        refs[name] = (
            Unavailable(f"step {r.get('step')} failed: {r.get('file')}: {r.get('reason')}")
            if r
            else TensorFile(p, group_gradients=group_gradients, float16_as_float32=True)
        )
    return current, refs, None
