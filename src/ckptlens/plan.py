"""What the workflow runs for a config: its runs, their chunks and metric parts, and the files each
job reads and writes (paths from :mod:`ckptlens.store.layout`).

``Plan(config)`` is built once per Snakemake parse (workflow/rules/common.smk) from a validated
config; the rules' input functions and params are its methods. Local files only, no network, no
torch: it runs at parse time, inside every cluster job too. Params built from it must keep their
text (Snakemake reruns a job whose params' text changed): :func:`canonical` for mappings.
"""

from __future__ import annotations

import functools
import json
import re

from . import config as ckcfg
from . import metrics as ckmetrics
from .store import layout

#: what a run extracts from a loaded model (one job per chunk extracts all of them)
MODEL_EXTRACTIONS = ("activations", "gradients", "activation_gradients", "attentions")


def canonical(obj) -> str:
    """Params as key-sorted JSON: Snakemake compares params by their text, so a dict's key order
    (e.g. after reordering the YAML) must not count as a change."""
    return json.dumps(obj, sort_keys=True)


def identifier(name: str) -> str:
    """A run name as part of a rule name."""
    return re.sub(r"\W", "_", name)


def alternatives(names) -> str:
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


def _dirs(files) -> list[str]:
    """The sorted folders holding ``files`` (a job reads a chunk's folder, its declared output)."""
    return sorted({f.rpartition("/")[0] for f in files})


class Plan:
    """The jobs of a validated config, with the files they read and write."""

    def __init__(self, config):
        self.config = config
        self.runs = ckcfg.run_names(config)
        self.steps = {run: ckcfg.steps(config, run) for run in self.runs}
        self.enabled_metrics = {run: ckcfg.enabled_metrics(config, run) for run in self.runs}
        #: metric families a run computes (family -> its enabled metrics)
        self.run_families = {run: ckmetrics.group_by_family(self.enabled_metrics[run]) for run in self.runs}
        self.extractions = {run: ckcfg.needed_extractions(config, run) for run in self.runs}
        self.trained_runs = ckcfg.runs_of_kind(config, "train")
        self.fetched_runs = ckcfg.runs_of_kind(config, "fetch")
        self.table_runs = ckcfg.runs_of_kind(config, "table")
        self.computed_runs = self.trained_runs + self.fetched_runs  # metrics computed here, not imported
        # checkpoints deleted once extracted (Snakemake temp()): 154 revisions of a large model never
        # sit on disk at once
        self.temporary_runs = [
            r for r in self.fetched_runs if ckcfg.source(config, r).temporary(config["runs"][r]["source"])
        ]
        self.task_vectors = config.get("task_vectors", {})
        self.study = ckcfg.study(config)
        self.figures = ckcfg.figures(config)
        self.dynamics = ckcfg.dynamics_settings(config)
        # Jobs sized to their work: a run's steps in chunks (materialisation and extraction, one job
        # per chunk), chunks grouped into parts (metrics, one job per part and family).
        self.chunks = {run: ckcfg.chunks(config, run) for run in self.computed_runs}
        self.chunk_of = {run: {s: i for i, c in enumerate(self.chunks[run]) for s in c} for run in self.chunks}
        self.parts = {run: ckcfg.metric_parts(config, run) for run in self.chunks}
        #: task-vector sets that sample new weights -> their sample settings
        self.tv_sample = {
            name: ckcfg.sample_settings(config, name)
            for name in self.task_vectors
            if self.task_vectors[name].get("sample") is not None
        }
        self.tv_evaluated = [name for name, s in self.tv_sample.items() if s.get("evaluate")]
        self._metric_step_inputs = functools.cache(self._metric_step_inputs_uncached)

    # ------------------------------------------------------------------ per run
    def model_extractions(self, run) -> list[str]:
        """What a run extracts from a loaded model (activations, gradients, activation gradients)."""
        return [k for k in MODEL_EXTRACTIONS if k in self.extractions[run]]

    def family_layers(self, run, family):
        """Layer patterns a family is restricted to: the consecutive-layer chain for cross-layer
        activation metrics; None (every extracted layer) otherwise."""
        fam = ckmetrics.FAMILIES[family]
        if fam.needs == "activations" and fam.scope == "model":
            return ckcfg.targets(self.config, run).get("chain")
        return None

    def family_metrics(self, run, family) -> dict[str, dict]:
        """A family's enabled metrics of a run, with their parameters."""
        return {m: self.enabled_metrics[run][m] for m in self.run_families[run][family]}

    # ------------------------------------------------------------------ chunks
    def chunk_steps(self, run, chunk) -> list[int]:
        return self.chunks[run][int(chunk)]

    def step_file(self, run, what, step) -> str:
        """One step's file (``what``: checkpoints or an extraction) in its chunk's folder."""
        return layout.step_file(run, what, self.chunk_of[run][step], step)

    def chunk_step_files(self, run, what, chunk) -> dict[int, str]:
        """{step: file} of a chunk (the paths its job writes or reads)."""
        return {s: self.step_file(run, what, s) for s in self.chunk_steps(run, chunk)}

    # ------------------------------------------------------------------ sources
    def source_inputs(self, run, chunk) -> list[str]:
        """The local files a chunk's checkpoints are made from (none for hub downloads)."""
        src, spec = ckcfg.source(self.config, run), self.config["runs"][run]["source"]
        return [f for s in self.chunk_steps(run, chunk) for f in src.inputs(spec, s)]

    def source_params(self, run, chunk) -> dict:
        """What decides each checkpoint of a chunk beyond its files (a hub revision)."""
        src, spec = ckcfg.source(self.config, run), self.config["runs"][run]["source"]
        return {s: src.step_params(spec, s) for s in self.chunk_steps(run, chunk)}

    def checkpoint_digests(self, run) -> list[str]:
        return [layout.digests(run, c) for c in range(len(self.chunks[run]))]

    # ------------------------------------------------------------------ metrics
    def part_steps(self, run, part) -> list[int]:
        return [s for c in self.parts[run][int(part)] for s in self.chunks[run][c]]

    def metric_step_inputs(self, run, family, part) -> dict[int, dict[str, str]]:
        """{step: {"current": file, <reference>: file}} of one metric job: each step's extraction
        and those of the checkpoints its metrics compare with (the references its family's enabled
        metrics take, where the step has them: no previous step before the first)."""
        return self._metric_step_inputs(run, family, int(part))

    def _metric_step_inputs_uncached(self, run, family, part):
        what = layout.extraction(ckmetrics.FAMILIES[family].needs)
        steps = self.steps[run]
        index = {s: i for i, s in enumerate(steps)}
        refs_wanted = ckmetrics.references_of(self.run_families[run][family])
        out = {}
        for step in self.part_steps(run, part):
            i = index[step]
            refs = {"final": steps[-1], "initial": steps[0]}
            if i > 0:
                refs["previous"] = steps[i - 1]
            if i > 1:
                refs["previous2"] = steps[i - 2]
            files = {"current": self.step_file(run, what, step)}
            for ref in refs_wanted:
                if ref in refs:
                    files[ref] = self.step_file(run, what, refs[ref])
            out[step] = files
        return out

    def metric_inputs(self, run, family, part) -> list[str]:
        """The chunk folders holding the files a metric job reads."""
        files = self.metric_step_inputs(run, family, part)
        return _dirs(f for step in files.values() for f in step.values())

    def family_tables(self, run) -> list[str]:
        """Every metric job's table of a run (what its aggregation reads)."""
        return [layout.metric_part(run, fam, p) for fam in self.run_families[run] for p in range(len(self.parts[run]))]

    # ------------------------------------------------------------------ analysis and plots
    def analysis_inputs(self, run) -> dict[str, str]:
        """The tidy table, and for a computed run the steps missing from it (their notes)."""
        inputs = {"table": layout.metrics_table(run)}
        if run in self.computed_runs:
            inputs["missing"] = layout.missing_steps(run)
        return inputs

    def dynamics_inputs(self, run) -> dict[str, str]:
        """The tidy table, and for a trained run its training log (the loss shows phase transitions)."""
        inputs = {"table": layout.metrics_table(run)}
        if run in self.trained_runs:
            inputs["log"] = layout.train_log(run)
        return inputs

    def metric_descriptions(self, run) -> dict[str, str]:
        """Enabled metric -> one-line description, for the report captions (sorted: params are
        compared by their text)."""
        return {m: ckmetrics.METRICS[m].description for m in sorted(self.enabled_metrics[run])}

    def figure_descriptions(self, figure) -> dict[str, str]:
        out = {}
        for run in self.figures[figure]["runs"]:
            out.update(self.metric_descriptions(run))
        return dict(sorted(out.items()))

    def figure_inputs(self, figure) -> dict[str, str]:
        """Per run of a study figure, what its kind reads (``<input>:<run>`` -> file); a training
        log only of trained runs."""
        from .plots.studies import FIGURE_KINDS  # the plots package only where a figure is asked for

        fig = self.figures[figure]
        reads = FIGURE_KINDS[fig["kind"]].reads
        return {
            f"{what}:{run}": layout.figure_input(run, what)
            for run in fig["runs"]
            for what in reads
            if what != "log" or run in self.trained_runs
        }

    # ------------------------------------------------------------------ task vectors
    def tv_base_step(self, name) -> int:
        tv = self.task_vectors[name]
        return tv.get("base_step", self.steps[tv["base_run"]][0])

    def tv_final_step(self, name, run) -> int:
        return self.task_vectors[name].get("step", self.steps[run][-1])

    def task_vector_files(self, name) -> dict[str, str]:
        """{"base": file, run: file} of a task-vector set: the weights extractions compared."""
        tv = self.task_vectors[name]
        weights = layout.extraction("weights")
        out = {"base": self.step_file(tv["base_run"], weights, self.tv_base_step(name))}
        for run in tv["runs"]:
            out[run] = self.step_file(run, weights, self.tv_final_step(name, run))
        return out

    def task_vector_dirs(self, name) -> list[str]:
        """The chunk folders holding the compared extractions."""
        return _dirs(self.task_vector_files(name).values())

    def tv_checkpoint(self, run, step) -> str:
        """The full checkpoint (imported, trained or fetched), not the weights extraction: sampled
        models need every tensor."""
        return self.step_file(run, layout.CHECKPOINTS, step)

    def tv_checkpoints(self, name) -> dict:
        """{base, runs: {run: final checkpoint}, starts: {run: its checkpoint at the base step}}; a
        run with a checkpoint at the base step is checked to start from the base (the base run
        itself only when that is another file)."""
        tv = self.task_vectors[name]
        base_step = self.tv_base_step(name)
        base = self.tv_checkpoint(tv["base_run"], base_step)
        runs = {run: self.tv_checkpoint(run, self.tv_final_step(name, run)) for run in tv["runs"]}
        starts = {
            run: self.tv_checkpoint(run, base_step)
            for run in tv["runs"]
            if base_step in self.steps[run] and self.tv_checkpoint(run, base_step) != base
        }
        return {"base": base, "runs": runs, "starts": starts}

    def tv_checkpoint_dirs(self, name) -> list[str]:
        """The chunk folders holding a set's checkpoints."""
        c = self.tv_checkpoints(name)
        return _dirs({c["base"], *c["runs"].values(), *c["starts"].values()})

    def tv_sample_files(self, name) -> dict:
        """{"mean": file, "samples": [file, ...]}: the weights a sampling job writes."""
        n = self.tv_sample[name]["n_samples"]
        return {"mean": layout.sample_mean(name), "samples": [layout.sample_file(name, i) for i in range(n)]}

    def tv_sample_params(self, name) -> dict:
        """What decides the sampled weights (the evaluation settings do not)."""
        return {k: v for k, v in self.tv_sample[name].items() if k != "evaluate"}

    def tv_evaluation_rows(self, name) -> list[dict]:
        """[{kind, name, path}] in the order of samples.csv: base, fine-tuned runs, mean, samples."""
        tv = self.task_vectors[name]
        c = self.tv_checkpoints(name)
        rows = [{"kind": "base", "name": f"{tv['base_run']}@step{self.tv_base_step(name)}", "path": c["base"]}]
        for run, path in c["runs"].items():
            step = self.tv_final_step(name, run)
            rows.append({"kind": "finetuned", "name": f"{run}@step{step}", "path": path})
        files = self.tv_sample_files(name)
        rows.append({"kind": "mean", "name": "mean", "path": files["mean"]})
        for i, path in enumerate(files["samples"]):
            rows.append({"kind": "sample", "name": f"sample{i}", "path": path})
        return rows

    def evaluation_inputs(self, name) -> list[str]:
        """What the evaluation reads: the chunk folders of the base and the fine-tuned runs'
        checkpoints, and the sampled checkpoints."""
        files = self.tv_sample_files(name)
        return self.tv_checkpoint_dirs(name) + [files["mean"], *files["samples"]]

    # ------------------------------------------------------------------ targets of `all`
    def final_outputs(self) -> list[str]:
        """What a plain run makes (`rule all`), but the report's pages (:meth:`report_table_outputs`)."""
        out = [layout.identical_steps(run) for run in self.fetched_runs]
        for run in self.runs:
            out += [
                layout.metrics_table(run),
                layout.analysis_table(run, "pca"),
                layout.analysis_table(run, "correlation"),
                layout.analysis_table(run, "dynamics"),
                layout.trajectories_dir(run),
                layout.plot(run, "pca"),
                layout.plot(run, "correlation"),
            ]
            if run in self.trained_runs:
                out.append(layout.plot(run, "training"))
        for name in self.task_vectors:
            out += [layout.task_vector_table(name), layout.task_vector_plot(name)]
        for name in self.tv_sample:
            # the job that writes every sample writes their table of components too
            out.append(layout.sample_components(name))
            if name in self.tv_evaluated:
                out += [layout.samples_table(name), layout.samples_plot(name)]
        out += [layout.figure(name) for name in self.figures]
        return out

    def report_table_outputs(self) -> list[str]:
        """Every run's analysis tables as the report's HTML pages."""
        return [layout.report_table(run, table) for run in self.runs for table in layout.REPORT_TABLES]
