"""Do two steps hold identical weights? A published model sometimes serves byte-identical weights
under two revision names (an upload mistake), which makes their metrics identical; the workflow
compares every fetched checkpoint's digest and warns."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np


def weights_digest(keys: Iterable[str], get: Callable[[str], np.ndarray]) -> str:
    """sha256 over the sorted tensor names, dtypes, shapes and raw bytes (one tensor at a time)."""
    h = hashlib.sha256()
    for k in sorted(keys):
        a = np.ascontiguousarray(get(k))
        kb = k.encode()
        h.update(len(kb).to_bytes(8, "little"))
        h.update(kb)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.nbytes.to_bytes(8, "little"))
        if a.size:
            h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def check_identical_steps(digests: Mapping[int, str]) -> list[tuple[int, int]]:
    """Pairs ``(first step, later step)`` whose weight digests are equal — each repeat paired with the
    earliest step holding the same weights — with a warning naming both steps (two published revisions
    holding the same weights is usually an upload mistake, and makes their metrics identical)."""
    first: dict[str, int] = {}
    pairs = []
    for step in sorted(digests):
        d = digests[step]
        if d in first:
            pairs.append((first[d], step))
            warnings.warn(f"steps {first[d]} and {step} hold identical weights (digest {d[:12]}…)", stacklevel=2)
        else:
            first[d] = step
    return pairs


def digests_of(paths: Mapping[int, str | Path]) -> dict[int, str]:
    """``{step: weights_digest}`` of checkpoint files/folders (read one tensor at a time)."""
    from .readers import open_checkpoint

    out = {}
    for step, p in paths.items():
        with open_checkpoint(p) as ckpt:
            out[step] = weights_digest(ckpt.keys, ckpt.get)
    return out
