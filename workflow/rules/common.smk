# Config validation, wildcard constraints and the get_* input helpers of every stage.
# Runs at parse time (also inside every cluster job): local files only, no network, no torch.
import json
import re

from ckptlens import config as ckcfg
from ckptlens import io as ckio
from ckptlens import metrics as ckmetrics
from ckptlens import task_vector_sampling as cktvs

try:
    ckcfg.validate(config)
except ckcfg.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None

RUNS = ckcfg.run_names(config)
STEPS = {run: ckcfg.steps(config, run) for run in RUNS}
ENABLED = {run: ckcfg.enabled_metrics(config, run) for run in RUNS}
FAMILIES = {run: ckmetrics.group_by_family(ENABLED[run]) for run in RUNS}
NEEDS = {run: ckcfg.needed_extractions(config, run) for run in RUNS}
TRAINED_RUNS = [
    r for r in RUNS if ckcfg.source_type(config, r) in ckcfg.TRAINED_SOURCES
]
MODEL_KINDS = ("activations", "gradients", "activation_gradients")
TASK_VECTORS = config.get("task_vectors", {})
STUDY = ckcfg.study(config)
FIGURES = ckcfg.figures(config)
DYNAMICS = ckcfg.dynamics_settings(config)
LOCAL_RUNS = [r for r in RUNS if ckcfg.source_type(config, r) == "local"]
HF_RUNS = [r for r in RUNS if ckcfg.source_type(config, r) == "huggingface"]
TABLE_RUNS = [r for r in RUNS if ckcfg.source_type(config, r) == "table"]
COMPUTED_RUNS = [
    r for r in RUNS if r not in TABLE_RUNS
]  # metrics computed here, not imported
# Hugging Face checkpoints deleted once extracted (Snakemake temp()): 154 revisions of a large
# model never sit on disk at once.
HF_TEMP_RUNS = [
    r for r in HF_RUNS if config["runs"][r]["source"].get("delete_after", True)
]


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


def model_kinds(run):
    """What a run extracts from a loaded model (activations, gradients, activation gradients)."""
    return [k for k in MODEL_KINDS if k in NEEDS[run]]


def family_layers(run, family):
    """Layer patterns a family is restricted to: the consecutive-layer chain for cross-layer
    activation metrics; None (every extracted layer) otherwise."""
    fam = ckmetrics.FAMILIES[family]
    if fam.needs == "activations" and fam.scope == "model":
        return ckcfg.targets(config, run).get("chain")
    return None


def get_task_vector_inputs(wildcards):
    tv = TASK_VECTORS[wildcards.name]
    base_step = tv.get("base_step", STEPS[tv["base_run"]][0])
    inputs = {
        "base": f"results/{tv['base_run']}/extract/weights/step{base_step}.safetensors"
    }
    for run in tv["runs"]:
        step = tv.get("step", STEPS[run][-1])
        inputs[run] = f"results/{run}/extract/weights/step{step}.safetensors"
    return inputs


def family_metrics(run, family):
    return {m: ENABLED[run][m] for m in FAMILIES[run][family]}


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
    inputs = {"current": f"results/{run}/extract/{needs}/step{step}.safetensors"}
    for ref in ckmetrics.references_of(FAMILIES[run][fam]):
        if ref in refs:
            inputs[ref] = f"results/{run}/extract/{needs}/step{refs[ref]}.safetensors"
    return inputs


def get_family_tables(wildcards):
    run = wildcards.run
    return [
        f"results/{run}/metrics/{fam}/step{step}.csv"
        for fam in FAMILIES[run]
        for step in STEPS[run]
    ]


def get_analysis_inputs(wildcards):
    """The tidy table, and for a computed run the steps missing from it (their notes)."""
    inputs = {"table": f"results/{wildcards.run}/metrics.parquet"}
    if wildcards.run in COMPUTED_RUNS:
        inputs["missing"] = f"results/{wildcards.run}/missing_steps.csv"
    return inputs


def metric_descriptions(run):
    """Enabled metric -> one-line description, for the report captions (sorted: params are
    compared by their text)."""
    if run in TABLE_RUNS:
        return {}
    return {m: ckmetrics.METRICS[m].description for m in sorted(ENABLED[run])}


def figure_descriptions(figure):
    out = {}
    for run in FIGURES[figure]["runs"]:
        out.update(metric_descriptions(run))
    return dict(sorted(out.items()))


def get_dynamics_inputs(wildcards):
    """The tidy table, and for a trained run its training log (the loss shows phase transitions)."""
    inputs = {"table": f"results/{wildcards.run}/metrics.parquet"}
    if wildcards.run in TRAINED_RUNS:
        inputs["log"] = f"results/{wildcards.run}/train_log.csv"
    return inputs


def get_figure_inputs(wildcards):
    """Per run of a study figure: its tidy table and detected dynamics (change-point marks), plus
    the training log or the analysis tables where the figure's kind shows them."""
    fig = FIGURES[wildcards.figure]
    inputs = {}
    for run in fig["runs"]:
        if fig["kind"] in ckcfg.FIGURES_WITH_ANALYSIS:
            inputs[f"pca:{run}"] = f"results/{run}/analysis/pca.csv"
            inputs[f"correlation:{run}"] = f"results/{run}/analysis/correlation.csv"
            continue
        inputs[f"table:{run}"] = f"results/{run}/metrics.parquet"
        inputs[f"dynamics:{run}"] = f"results/{run}/analysis/dynamics.csv"
        if fig["kind"] in ckcfg.FIGURES_WITH_LOGS:
            inputs[f"log:{run}"] = f"results/{run}/train_log.csv"
    return inputs


def get_local_checkpoint(wildcards):
    return ckcfg.local_checkpoints(config, wildcards.run)[int(wildcards.step)]


def get_checkpoint_digests(wildcards):
    return [
        f"results/{wildcards.run}/digests/step{s}.txt" for s in STEPS[wildcards.run]
    ]


def get_final_outputs():
    out = []
    for run in LOCAL_RUNS + HF_RUNS:
        out.append(f"results/{run}/identical_steps.csv")
    for run in RUNS:
        if run in TABLE_RUNS:
            out += [
                f"results/{run}/metrics.parquet",
                f"results/{run}/analysis/pca.csv",
                f"results/{run}/analysis/correlation.csv",
                f"results/{run}/analysis/dynamics.csv",
                f"results/{run}/plots/trajectories",
                f"results/{run}/plots/pca.png",
                f"results/{run}/plots/correlation.png",
            ]
            continue
        out += [
            f"results/{run}/metrics.parquet",
            f"results/{run}/analysis/pca.csv",
            f"results/{run}/analysis/correlation.csv",
            f"results/{run}/analysis/dynamics.csv",
            f"results/{run}/plots/trajectories",
            f"results/{run}/plots/pca.png",
            f"results/{run}/plots/correlation.png",
        ]
        if run in TRAINED_RUNS:
            out.append(f"results/{run}/plots/training.png")
    for name in TASK_VECTORS:
        out += [
            f"results/task_vectors/{name}/task_vectors.csv",
            f"results/task_vectors/{name}/task_vectors.png",
        ]
    out += tv_final_outputs()
    out += [f"results/figures/{name}.png" for name in FIGURES]
    return out


# ---------------------------------------------------------------- task vectors: sampling from the components
TV_SAMPLE = {
    name: cktvs.resolve_sample_settings(tv.get("sample"))
    for name, tv in TASK_VECTORS.items()
    if tv.get("sample") is not None
}
TV_EVALUATED = [name for name, s in TV_SAMPLE.items() if s.get("evaluate")]


def tv_checkpoint(run, step):
    """The full checkpoint (imported, trained or fetched), not the weights extraction: sampled
    models need every tensor."""
    return f"results/{run}/checkpoints/step{step}.safetensors"


def tv_checkpoints(name):
    """{base, runs: {run: final checkpoint}, starts: {run: its checkpoint at the base step}}; a run
    with a checkpoint at the base step is checked to start from the base (the base run itself
    only when that is another file)."""
    tv = TASK_VECTORS[name]
    base_step = tv.get("base_step", STEPS[tv["base_run"]][0])
    base = tv_checkpoint(tv["base_run"], base_step)
    runs = {
        run: tv_checkpoint(run, tv.get("step", STEPS[run][-1])) for run in tv["runs"]
    }
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


def tv_evaluate_params(name):
    """The evaluation task's settings; the tokenizer defaults to the base run's probe tokenizer
    (None: the MiniLM package's own)."""
    ev = dict(TV_SAMPLE[name]["evaluate"])
    if not ev.get("tokenizer"):
        ev["tokenizer"] = ckcfg.probe(config, TASK_VECTORS[name]["base_run"]).get(
            "tokenizer"
        )
    return ev


def tv_evaluation_rows(name):
    """[{kind, name, path}] in the order of samples.csv: base, fine-tuned runs, mean, samples."""
    tv = TASK_VECTORS[name]
    c = tv_checkpoints(name)
    base_step = tv.get("base_step", STEPS[tv["base_run"]][0])
    rows = [
        {"kind": "base", "name": f"{tv['base_run']}@step{base_step}", "path": c["base"]}
    ]
    for run, path in c["runs"].items():
        step = tv.get("step", STEPS[run][-1])
        rows.append({"kind": "finetuned", "name": f"{run}@step{step}", "path": path})
    files = tv_sample_files(name)
    rows.append({"kind": "mean", "name": "mean", "path": files["mean"]})
    for i, path in enumerate(files["samples"]):
        rows.append({"kind": "sample", "name": f"sample{i}", "path": path})
    return rows


def tv_final_outputs():
    """The targets of the sampling for `all`: per set with `sample`, its samples' table of
    components (made by the job that writes every sample); with `evaluate`, the scores and figure.
    """
    out = []
    for name in TV_SAMPLE:
        out.append(f"results/task_vectors/{name}/samples/components.csv")
        if name in TV_EVALUATED:
            out += [
                f"results/task_vectors/{name}/samples.csv",
                f"results/task_vectors/{name}/samples.png",
            ]
    return out
