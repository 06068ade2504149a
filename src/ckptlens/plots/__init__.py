"""Figures: one PNG per figure, written atomically, a "no data" figure for empty input.

One module per figure of a run, each exporting its ``plot_*`` function:

* :mod:`.trajectories` — :func:`plot_metric_trajectories`: every metric per layer over training,
  a panel per kind of module, heatmaps beyond 12 series (a multi-valued metric as one figure of
  small multiples);
* :mod:`.explorer` — :func:`explorer_html`: the interactive explorer of a run or a study, one
  self-contained HTML file;
* :mod:`.training` — :func:`plot_training_curves`: loss and errors of a trained run;
* :mod:`.pca` — :func:`plot_pca`: explained variance of the analysis' PCA;
* :mod:`.correlation` — :func:`plot_correlation`: the correlation heatmap;
* :mod:`.task_vectors` — :func:`plot_task_vectors`, :func:`plot_task_vector_samples`;
* :mod:`.studies` — the figures across runs of the config's ``figures`` section: a registry of
  figure kinds (:data:`ckptlens.plots.studies.FIGURE_KINDS`);
* :mod:`.labels` — :func:`metric_label`, how figures name a metric; :mod:`._style` — what every
  figure shares (the Agg figure, the PNG writer, the step axis, the size limit).

Common behaviour: parent directories are created and the PNG is renamed into place only when
complete (:func:`ckptlens.store.atomic.atomic_path`); an empty input gives a figure that says
"no data" (and a ``WARNING`` line on stderr) instead of an exception, because a report with one
blank panel is more useful than a failed workflow; training steps go on a symlog x axis when
they are log-spaced (:func:`step_axis`); no figure is larger than
:data:`ckptlens.plots._style.MAX_PIXELS` on either side — what does not fit is left out and the
figure says so.

Importing this package (or :mod:`ckptlens.plots.studies`) does not import matplotlib: the config
reads the figure registry while Snakemake parses the workflow. The names below are loaded when
first used (PEP 562), for notebooks: library code and workflow scripts import them from their
modules, so that a job's code hash (:mod:`ckptlens.store.codehash`) sees what it runs.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "plot_metric_trajectories": "trajectories",
    "explorer_html": "explorer",
    "write_explorer": "explorer",
    "plot_training_curves": "training",
    "plot_pca": "pca",
    "plot_correlation": "correlation",
    "plot_task_vectors": "task_vectors",
    "plot_task_vector_samples": "task_vectors",
    "metric_label": "labels",
    "DPI": "_style",
    "MAX_PIXELS": "_style",
    "axis_label": "labels",
    "is_log_spaced": "_style",
    "step_axis": "_style",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
