"""The results layout: every path a workflow run writes, in one place.

The workflow's rules and planning (:mod:`ckptlens.plan`), the workflow scripts and the notebook
loaders (:mod:`ckptlens.results`) all take their paths from here, so the tree below is spelled out
nowhere else::

    results/
      runs/<run>/
        checkpoints/chunk<i>/step<N>.safetensors      trained, converted, downloaded, or a reference
                                                      to a local safetensors checkpoint (read in place)
        downloads/step<N>/                            a hub download in progress (scratch)
        digests/chunk<i>.txt                          "<step>\\t<weights digest>" per checkpoint
        extract/<kind>/chunk<i>/step<N>.safetensors   weights, activations, gradient_stats, ...
        train_log.csv                                 a trained run's loss and errors
        identical_steps.csv                           a fetched run's steps with identical weights
        metrics/<family>/part<p>.csv                  one metric job's rows
        metrics.parquet                               the tidy table
        missing_steps.csv                             steps whose checkpoint failed
        analysis/{pca,pca_loadings,correlation,correlation_layers,dynamics}.csv, notes.txt
        plots/trajectories/, plots/{pca,correlation,training}.png
        report/{pca,correlation,dynamics}.html
        logs/<job>.log, benchmarks/<job>.tsv
      task_vectors/<name>/
        task_vectors.csv, task_vectors.png, samples.csv, samples.png
        samples/{mean,sample<i>}.safetensors, samples/{components,coefficients}.csv
        logs/<job>.log, benchmarks/<job>.tsv
      figures/<figure>.png, figures/logs/<figure>.log, figures/benchmarks/<figure>.tsv

Paths are posix strings relative to the project folder (what Snakemake rules take), under
``root`` (default ``results``; the loaders pass their ``results_dir``). Any argument may be a
Snakemake wildcard (``"{run}"``) or a glob (``"*"``): the functions only join names. Plain
functions, standard library only: Snakemake evaluates them while it parses the workflow.
"""

from __future__ import annotations

from pathlib import Path

#: the results folder, relative to the project folder
RESULTS = "results"
#: the checkpoints' folder in a run (``what`` of :func:`chunk_dir`; :func:`extraction` gives the others)
CHECKPOINTS = "checkpoints"
#: the analysis tables the report shows as HTML pages (report/<table>.html)
REPORT_TABLES = ("pca", "correlation", "dynamics", "metrics", "explorer")


# --------------------------------------------------------------------------- one run
def run_dir(run, root=RESULTS) -> str:
    """``results/runs/<run>``: everything of one run."""
    return f"{root}/runs/{run}"


def extraction(kind) -> str:
    """The folder of one kind of extraction in a run: the ``what`` of :func:`chunk_dir` and
    :func:`step_file` for extractions. The kinds (what metric families ``need``,
    :data:`ckptlens.metrics.registry.NEEDS`): ``weights``, ``activations``, ``gradient_stats`` (a few
    numbers a layer: the gradient statistics of the probe batches,
    :data:`ckptlens.store.tensors.GRADIENT_STATISTICS`), ``gradients`` (every batch's raw gradient,
    only for a family that needs them), ``activation_gradients``, ``attentions``."""
    return f"extract/{kind}"


def chunk_dir(run, what, chunk, root=RESULTS) -> str:
    """The folder of one chunk's step files; ``what``: :data:`CHECKPOINTS` or :func:`extraction`."""
    return f"{run_dir(run, root)}/{what}/chunk{chunk}"


def step_name(step) -> str:
    """A step's file name in its chunk's folder."""
    return f"step{step}.safetensors"


def step_file(run, what, chunk, step, root=RESULTS) -> str:
    return f"{chunk_dir(run, what, chunk, root)}/{step_name(step)}"


def download_dir(checkpoint) -> Path:
    """Scratch folder of a checkpoint's hub download (``downloads/step<N>`` of the run holding the
    checkpoint file ``checkpoint``): beside the chunk folders, not in them, so that a half
    download never sits under a chunk's output."""
    checkpoint = Path(checkpoint)
    return checkpoint.parents[2] / "downloads" / checkpoint.stem


def digests(run, chunk, root=RESULTS) -> str:
    """One ``<step>\\t<digest>`` line per checkpoint of a chunk."""
    return f"{run_dir(run, root)}/digests/chunk{chunk}.txt"


def train_log(run, root=RESULTS) -> str:
    return f"{run_dir(run, root)}/train_log.csv"


def identical_steps(run, root=RESULTS) -> str:
    return f"{run_dir(run, root)}/identical_steps.csv"


def metric_part(run, family, part, root=RESULTS) -> str:
    """The rows one metric job (a family over a part of the steps) computes."""
    return f"{run_dir(run, root)}/metrics/{family}/part{part}.csv"


def metrics_table(run, root=RESULTS) -> str:
    """The run's tidy table (run, step, layer, metric, value)."""
    return f"{run_dir(run, root)}/metrics.parquet"


def missing_steps(run, root=RESULTS) -> str:
    return f"{run_dir(run, root)}/missing_steps.csv"


def analysis_table(run, name, root=RESULTS) -> str:
    """``analysis/<name>.csv``: ``pca``, ``pca_loadings``, ``correlation``, ``correlation_layers``
    (the cross-metric analysis) or ``dynamics``."""
    return f"{run_dir(run, root)}/analysis/{name}.csv"


def analysis_notes(run, root=RESULTS) -> str:
    return f"{run_dir(run, root)}/analysis/notes.txt"


def trajectories_dir(run, root=RESULTS) -> str:
    """One :func:`trajectory_name` per metric."""
    return f"{run_dir(run, root)}/plots/trajectories"


def trajectory_name(metric) -> str:
    """A metric's figure in :func:`trajectories_dir`."""
    return f"trajectory_{metric}.png"


def plot(run, name, root=RESULTS) -> str:
    """``plots/<name>.png``: ``pca``, ``correlation``, ``training``."""
    return f"{run_dir(run, root)}/plots/{name}.png"


def report_table(run, table, root=RESULTS) -> str:
    """The HTML page of one of :data:`REPORT_TABLES`."""
    return f"{run_dir(run, root)}/report/{table}.html"


def table_products(run, figures=(), root=RESULTS) -> list[str]:
    """Everything made from a run's metrics table: its analyses, plots (not the training plot, the
    training log's), report pages, and ``figures`` (the names of the study figures that show it).
    What a failed aggregation removes with the table, so that nothing is left from the one before."""
    out = [analysis_table(run, n, root) for n in ("pca", "pca_loadings", "correlation", "correlation_layers")]
    out += [analysis_table(run, "dynamics", root), analysis_notes(run, root), trajectories_dir(run, root)]
    out += [plot(run, "pca", root), plot(run, "correlation", root)]
    out += [report_table(run, table, root) for table in REPORT_TABLES]
    return out + [figure(name, root) for name in figures]


# Logs and benchmarks of a job sit in its run's (task-vector set's, figures') folder, under the
# same relative name: <folder>/logs/<job>.log and <folder>/benchmarks/<job>.tsv.
def _log(folder, job) -> str:
    return f"{folder}/logs/{job}.log"


def _benchmark(folder, job) -> str:
    return f"{folder}/benchmarks/{job}.tsv"


def run_log(run, job, root=RESULTS) -> str:
    """``job``: the rule's name, with ``/chunk<i>`` (``/<family>/part<p>``) for per-chunk (per-part) jobs."""
    return _log(run_dir(run, root), job)


def run_benchmark(run, job, root=RESULTS) -> str:
    return _benchmark(run_dir(run, root), job)


# --------------------------------------------------------------------------- task vectors
def task_vector_dir(name, root=RESULTS) -> str:
    """``results/task_vectors/<name>``: everything of one task-vector set."""
    return f"{root}/task_vectors/{name}"


def task_vector_table(name, root=RESULTS) -> str:
    """PCA per layer across the set's runs."""
    return f"{task_vector_dir(name, root)}/task_vectors.csv"


def task_vector_plot(name, root=RESULTS) -> str:
    return f"{task_vector_dir(name, root)}/task_vectors.png"


def samples_dir(name, root=RESULTS) -> str:
    """Weights drawn from the set's principal components."""
    return f"{task_vector_dir(name, root)}/samples"


def sample_mean(name, root=RESULTS) -> str:
    return f"{samples_dir(name, root)}/mean.safetensors"


def sample_file(name, i, root=RESULTS) -> str:
    return f"{samples_dir(name, root)}/sample{i}.safetensors"


def sample_components(name, root=RESULTS) -> str:
    return f"{samples_dir(name, root)}/components.csv"


def sample_coefficients(name, root=RESULTS) -> str:
    return f"{samples_dir(name, root)}/coefficients.csv"


def samples_table(name, root=RESULTS) -> str:
    """The evaluation of the base, the fine-tuned runs, the mean and the samples."""
    return f"{task_vector_dir(name, root)}/samples.csv"


def samples_plot(name, root=RESULTS) -> str:
    return f"{task_vector_dir(name, root)}/samples.png"


def task_vector_log(name, job, root=RESULTS) -> str:
    return _log(task_vector_dir(name, root), job)


def task_vector_benchmark(name, job, root=RESULTS) -> str:
    return _benchmark(task_vector_dir(name, root), job)


# --------------------------------------------------------------------------- figures across runs
def figures_dir(root=RESULTS) -> str:
    return f"{root}/figures"


def figure(name, root=RESULTS) -> str:
    return f"{figures_dir(root)}/{name}.png"


def figure_log(name, root=RESULTS) -> str:
    return _log(figures_dir(root), name)


def figure_benchmark(name, root=RESULTS) -> str:
    return _benchmark(figures_dir(root), name)


def study_page(root=RESULTS) -> str:
    """The report's landing page: the study at a glance (rule ``report_study``)."""
    return f"{figures_dir(root)}/study.html"


def study_landing(root=RESULTS) -> str:
    """The same page as a fragment the report's opening view embeds (workflow/report/workflow.rst)."""
    return f"{figures_dir(root)}/study_landing.html"


def study_explorer(root=RESULTS) -> str:
    """The interactive explorer of every run side by side."""
    return f"{figures_dir(root)}/explorer.html"


#: what a study figure reads of each of its runs (ckptlens.plots.studies, a kind's ``reads``)
FIGURE_INPUTS = {
    "table": metrics_table,
    "dynamics": lambda run, root=RESULTS: analysis_table(run, "dynamics", root),
    "log": train_log,
    "pca": lambda run, root=RESULTS: analysis_table(run, "pca", root),
    "correlation": lambda run, root=RESULTS: analysis_table(run, "correlation", root),
}


def figure_input(run, what, root=RESULTS) -> str:
    """The file of ``run`` a study figure reads as its input ``what`` (a key of :data:`FIGURE_INPUTS`)."""
    return FIGURE_INPUTS[what](run, root)
