"""Layer names: their depth order, their depth index and pair labels — one rule for every stage
(the chain of consecutive layers of a metric, the rows of a table, the lines and panels of a figure).

Depth order (:func:`layer_key`, :func:`layer_order`) depends on the names only, never on the order
they were listed in, so that a metric job, the analysis of a table sorted by name and a figure
agree:

1. names without a number that look like an input (``emb``, ``input``, ``wte``/``wpe``, …: the
   embedding, an input projection) come first; an output embedding (``unembed``, ``embed_out``)
   does not count as one;
2. then names with a number, in natural order: ``blocks.2`` before ``blocks.10``, component by
   component (``head2`` before ``head10``), and a module after its own submodules
   (``blocks.0.attn`` before ``blocks.0``: a block's output is computed after its attention's);
3. then the other names without a number (the unembedding, a classifier, a final norm).

Ties are broken by the name itself, so the order is total. A pair label ``"<a>~<b>"``
(:data:`PAIR_SEP`; a value about two layers, the earlier or the reading side first) sorts by ``a``,
then ``b``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PAIR_SEP = "~"
_DIGITS = re.compile(r"(\d+)")
_INPUT = re.compile(r"emb|input|(^|[._])in_|wte|wpe|stem|patch", re.IGNORECASE)
_OUTPUT = re.compile(r"unemb|emb\w*_out|lm_head", re.IGNORECASE)
_FIRST_INT = re.compile(r"\d+")


def _component(c: str) -> tuple:
    # ("head", 10, "") for "head10": strings at even places, numbers at odd ones, so any two compare
    parts = _DIGITS.split(c)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _path(name: str) -> tuple:
    # (0, component) per component, then (1,): a name sorts after every name it is a prefix of
    return tuple((0, _component(c)) for c in name.split(".")) + ((1,),)


def _group(name: str) -> int:
    if _FIRST_INT.search(name):
        return 1
    return 0 if _INPUT.search(name) and not _OUTPUT.search(name) else 2


def layer_key(name: str) -> tuple:
    """Sort key of a layer name (or pair label) in depth order; see the module docstring."""
    name = str(name)
    first, sep, second = name.partition(PAIR_SEP)
    return (_group(first), _path(first), _path(second) if sep else (), name)


def layer_order(names: Iterable[str]) -> list[str]:
    """``names`` in depth order (duplicates kept)."""
    return sorted(names, key=layer_key)


def layer_index(name: str) -> int | None:
    """The depth index of a layer: the first integer in its name (``blocks.3.attn`` -> 3), None
    without one."""
    m = _FIRST_INT.search(str(name))
    return int(m.group()) if m else None


def pair_label(a: str, b: str) -> str:
    return f"{a}{PAIR_SEP}{b}"


def split_pair(label: str) -> tuple[str, str] | None:
    """``"a~b"`` -> ``("a", "b")``; None for a single layer."""
    a, sep, b = str(label).partition(PAIR_SEP)
    return (a, b) if sep else None
