# Config validation, wildcard constraints and the get_* input helpers of every stage.
# Runs at parse time (also inside every cluster job): local files only, no network, no torch.
import json
import re

from ckptlens import config as ckcfg
from ckptlens import metrics as ckmetrics
from ckptlens.store.codehash import code_hash

try:
    ckcfg.validate(config)
except ckcfg.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None

# the jobs read the policy for unreadable checkpoints from the config (not a param: see sources.smk)
config.setdefault("on_bad_checkpoint", ckcfg.on_bad_checkpoint(config))
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
MODEL_EXTRACTIONS = ("activations", "gradients", "activation_gradients")
TASK_VECTORS = config.get("task_vectors", {})
STUDY = ckcfg.study(config)
FIGURES = ckcfg.figures(config)
DYNAMICS = ckcfg.dynamics_settings(config)
RUN_DIR = "results/runs/{run}"


def _alternatives(names):
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    run=_alternatives(RUNS),
    step=r"\d+",
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


# ---------------------------------------------------------------- sources
def get_source_inputs(wildcards):
    """The local files a fetched checkpoint is made from (none for a hub download)."""
    run = wildcards.run
    return ckcfg.source(config, run).inputs(
        config["runs"][run]["source"], int(wildcards.step)
    )


def get_checkpoint_digests(wildcards):
    return [
        run_path(wildcards.run, f"digests/step{s}.txt") for s in STEPS[wildcards.run]
    ]


# ---------------------------------------------------------------- metrics
def get_metric_inputs(wildcards):
    """A family job reads its checkpoint's extraction and those of the checkpoints it compares to."""
    run, step, fam = wildcards.run, int(wildcards.step), wildcards.family
    needs = ckmetrics.FAMILIES[fam].needs
    steps = STEPS[run]
    i = steps.index(step)
    refs = {"final": steps[-1], "initial": steps[0]}
    if i > 0:
        refs["previous"] = steps[i - 1]
    if i > 1:
        refs["previous2"] = steps[i - 2]
    inputs = {"current": run_path(run, f"extract/{needs}/step{step}.safetensors")}
    for ref in ckmetrics.references_of(RUN_FAMILIES[run][fam]):
        if ref in refs:
            inputs[ref] = run_path(run, f"extract/{needs}/step{refs[ref]}.safetensors")
    return inputs


def get_family_tables(wildcards):
    run = wildcards.run
    return [
        run_path(run, f"metrics/{fam}/step{step}.csv")
        for fam in RUN_FAMILIES[run]
        for step in STEPS[run]
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


def get_task_vector_inputs(wildcards):
    tv = TASK_VECTORS[wildcards.name]
    inputs = {
        "base": run_path(
            tv["base_run"],
            f"extract/weights/step{tv_base_step(wildcards.name)}.safetensors",
        )
    }
    for run in tv["runs"]:
        step = tv_final_step(wildcards.name, run)
        inputs[run] = run_path(run, f"extract/weights/step{step}.safetensors")
    return inputs


def tv_checkpoint(run, step):
    """The full checkpoint (imported, trained or fetched), not the weights extraction: sampled
    models need every tensor."""
    return run_path(run, f"checkpoints/step{step}.safetensors")


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


def tv_checkpoint_files(name):
    c = tv_checkpoints(name)
    return sorted({c["base"], *c["runs"].values(), *c["starts"].values()})


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
