"""Module-name patterns of the config: globs where ``*`` stays within one dotted component and
``**`` crosses dots, so ``blocks.*`` means the blocks themselves, not every submodule."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^.]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(pattern: str, name: str) -> bool:
    return compile_pattern(pattern).match(name) is not None


def select(patterns, names) -> list[str]:
    """Names matching any pattern, in the given order."""
    return [n for n in names if any(matches(p, n) for p in patterns)]


def unmatched(patterns, names) -> list[str]:
    """Patterns that match none of ``names`` (a config error: probably a typo)."""
    return [p for p in patterns if not any(matches(p, n) for n in names)]


class _Selected(Mapping):
    def __init__(self, base: Mapping, keys: list[str]):
        self._base, self._keys = base, keys

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._base[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def select_layers(layers: Mapping, patterns) -> Mapping:
    """The entries of a lazy mapping whose names match ``patterns`` (None = all), still read lazily."""
    if patterns is None:
        return layers
    return _Selected(layers, select(patterns, list(layers)))
