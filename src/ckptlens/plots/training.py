"""Training curves of a trained run: loss and in-/out-of-distribution error over training steps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

#: At most this many runs are drawn (lines and legend entries); the title names the rest's count.
MAX_RUNS = 20
TITLE = "training curves"


def plot_training_curves(log: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Loss and in-/out-of-distribution error over training steps.

    ``log`` has the columns ``step, loss`` and optionally ``id_error, ood_error`` (fractions
    in [0, 1]) and ``run`` (one line per run). Left panel: loss on a log y axis (linear if no
    loss is positive). Right panel: the error rates on a fixed [0, 1] axis, in-distribution
    solid, out-of-distribution dashed; it is left out when neither error has a finite value.
    """
    from . import _style

    if log is None or len(log) == 0 or "step" not in log.columns or "loss" not in log.columns:
        return _style.no_data(
            path,
            TITLE,
            "the training log is empty"
            if log is None or len(log) == 0
            else "the training log lacks a 'step' or 'loss' column",
        )
    df = clean_log(log)
    err_cols = [c for c in ("id_error", "ood_error") if np.isfinite(df[c].to_numpy()).any()]
    if not np.isfinite(df["loss"].to_numpy()).any() and not err_cols:
        return _style.no_data(path, TITLE, "no finite loss or error value")
    return _style.save(_figure_training_curves(df, err_cols), path)


def clean_log(log: pd.DataFrame) -> pd.DataFrame:
    """A step-sorted copy of a training log without rows lacking a step; ``loss``, ``id_error``
    and ``ood_error`` as floats (NaN where missing)."""
    df = log.copy()
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df = df[np.isfinite(df["step"].to_numpy(dtype=float))].sort_values("step")
    for col in ("loss", "id_error", "ood_error"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df.columns else np.nan
    return df


def _figure_training_curves(df: pd.DataFrame, err_cols: list[str]):
    import matplotlib

    from . import _style

    all_runs = sorted(df["run"].astype(str).unique()) if "run" in df.columns else [None]
    runs = all_runs[:MAX_RUNS]
    colours = matplotlib.colormaps["tab10"]

    with matplotlib.rc_context(_style.RC):
        npanels = 2 if err_cols else 1
        fig = _style.new_figure(5.0 * npanels + 0.6, 3.8)
        axes = fig.subplots(1, npanels, squeeze=False).ravel()
        for i, run in enumerate(runs):
            one = df if run is None else df[df["run"].astype(str) == run]
            c = colours(i % 10)
            suffix = "" if run is None or len(runs) == 1 else f" ({run})"
            axes[0].plot(one["step"], one["loss"], color=c, linewidth=1.3, label=f"loss{suffix}")
            if err_cols:
                for col, ls, name in (("id_error", "-", "in-distribution"), ("ood_error", "--", "out-of-distribution")):
                    if col in err_cols:
                        axes[1].plot(
                            one["step"], one[col], color=c, linestyle=ls, linewidth=1.3, label=f"{name}{suffix}"
                        )
        loss = df["loss"].to_numpy()
        if (loss[np.isfinite(loss)] > 0).any():
            _style.log_y(axes[0], loss)
            axes[0].set_ylabel("training loss (log scale)")
        else:
            axes[0].set_ylabel("training loss")
        axes[0].set_title("loss")
        if len(runs) > 1:
            axes[0].legend(loc="best")
        if err_cols:
            axes[1].set_ylim(-0.02, 1.02)
            axes[1].set_ylabel("error rate (fraction wrong)")
            axes[1].set_title("in- / out-of-distribution error")
            axes[1].legend(loc="best")
        for ax in axes:
            _style.step_axis(ax, df["step"].to_numpy())
        cut = f"{len(runs)} of {len(all_runs)} runs drawn" if len(runs) < len(all_runs) else ""
        fig.suptitle(_style.with_notes(TITLE, [cut]))
        return fig
