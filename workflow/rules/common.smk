# Config validation, wildcard constraints and the get_* input helpers of every stage.
# Runs at parse time (also inside every cluster job): local files only, no network, no torch.
import functools
import json
import re

from ckptlens import config as ckcfg
from ckptlens import metrics as ckmetrics
from ckptlens.store.codehash import code_hash

try:
    ckcfg.validate(config)
except ckcfg.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None

RUNS = ckcfg.run_names(config)
STEPS = {run: ckcfg.steps(config, run) for run in RUNS}
ENABLED_METRICS = {run: ckcfg.enabled_metrics(config, run) for run in RUNS}
# metric families a run computes (family -> its enabled metrics); the registry is ckmetrics.FAMILIES
RUN_FAMILIES = {run: ckmetrics.group_by_family(ENABLED_METRICS[run]) for run in RUNS}
EXTRACTIONS = {run: ckcfg.needed_extractions(config, run) for run in RUNS}
TRAINED_RUNS = ckcfg.runs_of_kind(config, "train")
FETCHED_RUNS = ckcfg.runs_of_kind(config, "fetch")
TABLE_RUNS = ckcfg.runs_of_kind(config, "table")
COMPUTED_RUNS = TRAINED_RUNS + FETCHED_RUNS  # metrics computed here, not imported
# checkpoints deleted once extracted (Snakemake temp()): 154 revisions of a large model never sit
# on disk at once
TEMPORARY_RUNS = [
    r
    for r in FETCHED_RUNS
    if ckcfg.source(config, r).temporary(config["runs"][r]["source"])
]
MODEL_EXTRACTIONS = ("activations", "gradients", "activation_gradients", "attentions")
TASK_VECTORS = config.get("task_vectors", {})
STUDY = ckcfg.study(config)
FIGURES = ckcfg.figures(config)
DYNAMICS = ckcfg.dynamics_settings(config)
# Jobs sized to their work: a run's steps in chunks (materialisation and extraction, one job per
# chunk), chunks grouped into parts (metrics, one job per part and family); see ckptlens.config.
CHUNKS = {run: ckcfg.chunks(config, run) for run in COMPUTED_RUNS}
CHUNK_OF = {run: {s: i for i, c in enumerate(CHUNKS[run]) for s in c} for run in CHUNKS}
PARTS = {run: ckcfg.metric_parts(config, run) for run in CHUNKS}


def _alternatives(names):
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    run=_alternatives(RUNS),
    chunk=r"\d+",
    part=r"\d+",
    family=_alternatives(ckmetrics.FAMILIES),
    name=_alternatives(TASK_VECTORS),
    figure=_alternatives(FIGURES),


def canonical(obj):
    """Params as key-sorted JSON: Snakemake compares params by their text, so a dict's key order
    (e.g. after reordering the YAML) must not count as a change."""
    return json.dumps(obj, sort_keys=True)


def identifier(name):
    """A run name as part of a rule name."""
    return re.sub(r"\W", "_", name)


def script_code(script):
    """Hash of the library code a rule's script runs (its import closure): a param, so that
    editing that code reruns the rule's jobs and editing other code does not."""
    return code_hash(ckcfg.WORKFLOW_DIR / "scripts" / f"{script}.py")


def run_path(run, path):
    """``results/runs/<run>/<path>``."""
    return f"results/runs/{run}/{path}"


def model_extractions(run):
    """What a run extracts from a loaded model (activations, gradients, activation gradients)."""
    return [k for k in MODEL_EXTRACTIONS if k in EXTRACTIONS[run]]


def family_layers(run, family):
    """Layer patterns a family is restricted to: the consecutive-layer chain for cross-layer
    activation metrics; None (every extracted layer) otherwise."""
    fam = ckmetrics.FAMILIES[family]
    if fam.needs == "activations" and fam.scope == "model":
        return ckcfg.targets(config, run).get("chain")
    return None


def family_metrics(run, family):
    return {m: ENABLED_METRICS[run][m] for m in RUN_FAMILIES[run][family]}


def family_code(family):
    return ckmetrics.family_code_hash(family)


# ---------------------------------------------------------------- chunks
def chunk_steps(run, chunk):
    return CHUNKS[run][int(chunk)]


def chunk_dir(run, what, chunk):
    """The folder of one chunk's files: ``what`` is ``checkpoints`` or ``extract/<kind>``."""
    return run_path(run, f"{what}/chunk{chunk}")


def step_file(run, what, step):
    """One step's file in its chunk's folder."""
    return run_path(run, f"{what}/chunk{CHUNK_OF[run][step]}/step{step}.safetensors")


def chunk_step_files(run, what, chunk):
    """{step: file} of a chunk (the paths its job writes or reads)."""
    return {s: step_file(run, what, s) for s in chunk_steps(run, chunk)}


# ---------------------------------------------------------------- sources
def get_source_inputs(wildcards):
    """The local files a chunk's checkpoints are made from (none for hub downloads)."""
    run = wildcards.run
    src, spec = ckcfg.source(config, run), config["runs"][run]["source"]
    return [f for s in chunk_steps(run, wildcards.chunk) for f in src.inputs(spec, s)]


def chunk_source_params(wildcards):
    """What decides each checkpoint of a chunk beyond its files (a hub revision)."""
    run = wildcards.run
    src, spec = ckcfg.source(config, run), config["runs"][run]["source"]
    return canonical(
        {s: src.step_params(spec, s) for s in chunk_steps(run, wildcards.chunk)}
    )


def get_checkpoint_digests(wildcards):
    return [
        run_path(wildcards.run, f"digests/chunk{c}.txt")
        for c in range(len(CHUNKS[wildcards.run]))
    ]


# ---------------------------------------------------------------- metrics
def part_steps(run, part):
    return [s for c in PARTS[run][int(part)] for s in CHUNKS[run][c]]


@functools.lru_cache(maxsize=None)
def metric_step_inputs(run, family, part):
    """{step: {"current": file, <reference>: file}} of one metric job: each step's extraction and
    those of the checkpoints its metrics compare with."""
    needs = ckmetrics.FAMILIES[family].needs
    steps = STEPS[run]
    index = {s: i for i, s in enumerate(steps)}
    refs_wanted = ckmetrics.references_of(RUN_FAMILIES[run][family])
    out = {}
    for step in part_steps(run, part):
        i = index[step]
        refs = {"final": steps[-1], "initial": steps[0]}
        if i > 0:
            refs["previous"] = steps[i - 1]
        if i > 1:
            refs["previous2"] = steps[i - 2]
        files = {"current": step_file(run, f"extract/{needs}", step)}
        for ref in refs_wanted:
            if ref in refs:
                files[ref] = step_file(run, f"extract/{needs}", refs[ref])
        out[step] = files
    return out


def get_metric_inputs(wildcards):
    """The chunk folders holding the files a metric job reads."""
    files = metric_step_inputs(wildcards.run, wildcards.family, int(wildcards.part))
    return sorted(
        {f.rpartition("/")[0] for step in files.values() for f in step.values()}
    )


def get_family_tables(wildcards):
    run = wildcards.run
    return [
        run_path(run, f"metrics/{fam}/part{p}.csv")
        for fam in RUN_FAMILIES[run]
        for p in range(len(PARTS[run]))
    ]


# ---------------------------------------------------------------- analysis and plots
def get_analysis_inputs(wildcards):
    """The tidy table, and for a computed run the steps missing from it (their notes)."""
    inputs = {"table": run_path(wildcards.run, "metrics.parquet")}
    if wildcards.run in COMPUTED_RUNS:
        inputs["missing"] = run_path(wildcards.run, "missing_steps.csv")
    return inputs


def get_dynamics_inputs(wildcards):
    """The tidy table, and for a trained run its training log (the loss shows phase transitions)."""
    inputs = {"table": run_path(wildcards.run, "metrics.parquet")}
    if wildcards.run in TRAINED_RUNS:
        inputs["log"] = run_path(wildcards.run, "train_log.csv")
    return inputs


def metric_descriptions(run):
    """Enabled metric -> one-line description, for the report captions (sorted: params are
    compared by their text)."""
    return {m: ckmetrics.METRICS[m].description for m in sorted(ENABLED_METRICS[run])}


def figure_descriptions(figure):
    out = {}
    for run in FIGURES[figure]["runs"]:
        out.update(metric_descriptions(run))
    return dict(sorted(out.items()))


FIGURE_INPUTS = {
    "table": "metrics.parquet",
    "dynamics": "analysis/dynamics.csv",
    "log": "train_log.csv",
    "pca": "analysis/pca.csv",
    "correlation": "analysis/correlation.csv",
}


def get_figure_inputs(wildcards):
    """Per run of a study figure, what its kind reads (``<input>:<run>`` -> file)."""
    from ckptlens.plots.studies import FIGURE_KINDS

    fig = FIGURES[wildcards.figure]
    reads = FIGURE_KINDS[fig["kind"]].reads
    return {
        f"{what}:{run}": run_path(run, FIGURE_INPUTS[what])
        for run in fig["runs"]
        for what in reads
        if what != "log" or run in TRAINED_RUNS
    }


# ---------------------------------------------------------------- task vectors
TV_SAMPLE = {
    name: ckcfg.sample_settings(config, name)
    for name in TASK_VECTORS
    if TASK_VECTORS[name].get("sample") is not None
}
TV_EVALUATED = [name for name, s in TV_SAMPLE.items() if s.get("evaluate")]


def tv_base_step(name):
    tv = TASK_VECTORS[name]
    return tv.get("base_step", STEPS[tv["base_run"]][0])


def tv_final_step(name, run):
    return TASK_VECTORS[name].get("step", STEPS[run][-1])


def task_vector_files(name):
    """{"base": file, run: file} of a task-vector set: the weights extractions compared."""
    tv = TASK_VECTORS[name]
    out = {"base": step_file(tv["base_run"], "extract/weights", tv_base_step(name))}
    for run in tv["runs"]:
        out[run] = step_file(run, "extract/weights", tv_final_step(name, run))
    return out


def get_task_vector_inputs(wildcards):
    """The chunk folders holding the compared extractions."""
    return sorted(
        {f.rpartition("/")[0] for f in task_vector_files(wildcards.name).values()}
    )


def tv_checkpoint(run, step):
    """The full checkpoint (imported, trained or fetched), not the weights extraction: sampled
    models need every tensor."""
    return step_file(run, "checkpoints", step)


def tv_checkpoints(name):
    """{base, runs: {run: final checkpoint}, starts: {run: its checkpoint at the base step}}; a run
    with a checkpoint at the base step is checked to start from the base (the base run itself
    only when that is another file)."""
    tv = TASK_VECTORS[name]
    base_step = tv_base_step(name)
    base = tv_checkpoint(tv["base_run"], base_step)
    runs = {run: tv_checkpoint(run, tv_final_step(name, run)) for run in tv["runs"]}
    starts = {
        run: tv_checkpoint(run, base_step)
        for run in tv["runs"]
        if base_step in STEPS[run] and tv_checkpoint(run, base_step) != base
    }
    return {"base": base, "runs": runs, "starts": starts}


def tv_checkpoint_dirs(name):
    """The chunk folders holding a set's checkpoints."""
    c = tv_checkpoints(name)
    files = {c["base"], *c["runs"].values(), *c["starts"].values()}
    return sorted({f.rpartition("/")[0] for f in files})


def tv_sample_files(name):
    n = TV_SAMPLE[name]["n_samples"]
    d = f"results/task_vectors/{name}/samples"
    return {
        "mean": f"{d}/mean.safetensors",
        "samples": [f"{d}/sample{i}.safetensors" for i in range(n)],
    }


def tv_sample_params(name):
    """What decides the sampled weights (the evaluation settings do not)."""
    return {k: v for k, v in TV_SAMPLE[name].items() if k != "evaluate"}


def tv_evaluation_rows(name):
    """[{kind, name, path}] in the order of samples.csv: base, fine-tuned runs, mean, samples."""
    tv = TASK_VECTORS[name]
    c = tv_checkpoints(name)
    rows = [
        {
            "kind": "base",
            "name": f"{tv['base_run']}@step{tv_base_step(name)}",
            "path": c["base"],
        }
    ]
    for run, path in c["runs"].items():
        step = tv_final_step(name, run)
        rows.append({"kind": "finetuned", "name": f"{run}@step{step}", "path": path})
    files = tv_sample_files(name)
    rows.append({"kind": "mean", "name": "mean", "path": files["mean"]})
    for i, path in enumerate(files["samples"]):
        rows.append({"kind": "sample", "name": f"sample{i}", "path": path})
    return rows


def get_evaluation_inputs(wildcards):
    """What the evaluation reads: the chunk folders of the base and the fine-tuned runs'
    checkpoints, and the sampled checkpoints."""
    files = tv_sample_files(wildcards.name)
    return tv_checkpoint_dirs(wildcards.name) + [files["mean"], *files["samples"]]


# ---------------------------------------------------------------- targets of `all`
def get_final_outputs():
    out = [run_path(run, "identical_steps.csv") for run in FETCHED_RUNS]
    for run in RUNS:
        out += [
            run_path(run, p)
            for p in (
                "metrics.parquet",
                "analysis/pca.csv",
                "analysis/correlation.csv",
                "analysis/dynamics.csv",
                "plots/trajectories",
                "plots/pca.png",
                "plots/correlation.png",
            )
        ]
        if run in TRAINED_RUNS:
            out.append(run_path(run, "plots/training.png"))
    for name in TASK_VECTORS:
        out += [
            f"results/task_vectors/{name}/task_vectors.csv",
            f"results/task_vectors/{name}/task_vectors.png",
        ]
    for name in TV_SAMPLE:
        # the job that writes every sample writes their table of components too
        out.append(f"results/task_vectors/{name}/samples/components.csv")
        if name in TV_EVALUATED:
            out += [
                f"results/task_vectors/{name}/samples.csv",
                f"results/task_vectors/{name}/samples.png",
            ]
    out += [f"results/figures/{name}.png" for name in FIGURES]
    return out
