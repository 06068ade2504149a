"""Module-name patterns of the config: globs where ``*`` stays within one dotted component and
``**`` crosses dots, so ``blocks.*`` means the blocks themselves, not every submodule."""

from __future__ import annotations

import re
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
