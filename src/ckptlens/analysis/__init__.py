"""Analysis of a tidy metrics table: PCA across metrics (:mod:`.pca`), per-layer correlations
(:mod:`.correlation`), the training log against the metrics (:mod:`.training_log`), convergence
and change points (:mod:`.dynamics`), notes on missing steps (:mod:`.notes`).
numpy, pandas and scikit-learn; never torch or matplotlib.

The names below are loaded on first use, so that importing one submodule (a figure reading the
correlation table's summary rows) does not import scikit-learn.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lazy names' modules, for type checkers and the code hash (store.codehash)
    from . import correlation, notes, pca, training_log  # noqa: F401

_EXPORTS = {
    "correlation_matrix": "correlation",
    "layer_correlations": "correlation",
    "CORRELATION_COLUMNS": "correlation",
    "MEAN_LAYER": "correlation",
    "MEAN_TRAJECTORY_LAYER": "correlation",
    "SUMMARY_ROW_LABELS": "correlation",
    "metric_correlations": "correlation",
    "EXPLAINED_COLUMNS": "pca",
    "LOADINGS_COLUMNS": "pca",
    "pca_explained_variance": "pca",
    "gap_notes": "notes",
    "missing_steps": "notes",
    "log_correlations": "training_log",
    "TRAIN_LOSS": "training_log",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
