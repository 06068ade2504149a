"""Fixtures of the study-figure tests: the no-data figures and the figures drawn."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckptlens.plots import _style
from ckptlens.plots.studies import compare, gradient_pca, induction, linearity, model_size, rotary_sweep


@pytest.fixture
def no_data_calls(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    original = _style.no_data

    def spy(path, *args, **kwargs):
        calls.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(_style, "no_data", spy)
    return calls


# --------------------------------------------------------------------------------------------
# plot_study_figure: the workflow's figure spec
# --------------------------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch) -> list:
    """Records (function name, args, kwargs) of the figure functions plot_study_figure calls."""
    calls = []
    for module, name in (
        (induction, "plot_induction_study"),
        (rotary_sweep, "plot_rotary_sweep"),
        (linearity, "plot_linearity_study"),
        (gradient_pca, "plot_gradient_pca_study"),
        (model_size, "plot_model_size_study"),
        (compare, "plot_run_comparison"),
    ):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: calls.append((_n, a, k)) or Path(a[-1]))
    return calls
