"""Records the no-data figures written, for the figure tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckptlens.plots import (
    _style,
)


@pytest.fixture
def no_data_calls(monkeypatch) -> list[Path]:
    """Records the paths for which the "no data" figure was drawn."""
    calls: list[Path] = []
    original = _style.no_data

    def spy(path, *args, **kwargs):
        calls.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(_style, "no_data", spy)
    return calls
