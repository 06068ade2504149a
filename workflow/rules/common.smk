# Config validation, wildcard constraints and the get_* input helpers of every stage.
# Runs at parse time (also inside every cluster job): local files only, no network, no torch.
import json
import re

from ckptlens import config as ckcfg
from ckptlens import metrics as ckmetrics

try:
    ckcfg.validate(config)
except ckcfg.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None

RUNS = ckcfg.run_names(config)
STEPS = {run: ckcfg.steps(config, run) for run in RUNS}
ENABLED = {run: ckcfg.enabled_metrics(config, run) for run in RUNS}
FAMILIES = {run: ckmetrics.group_by_family(ENABLED[run]) for run in RUNS}
NEEDS = {run: ckcfg.needed_extractions(config, run) for run in RUNS}
TRAINED_RUNS = [r for r in RUNS if ckcfg.source_type(config, r) == "train_toy"]
LOCAL_RUNS = [r for r in RUNS if ckcfg.source_type(config, r) == "local"]


def _alternatives(names):
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    run=_alternatives(RUNS),
    step=r"\d+",
    family=_alternatives(ckmetrics.FAMILIES),


def canonical(obj):
    """Params as key-sorted JSON: Snakemake compares params by their text, so a dict's key order
    (e.g. after reordering the YAML) must not count as a change."""
    return json.dumps(obj, sort_keys=True)


def identifier(name):
    """A run name as part of a rule name."""
    return re.sub(r"\W", "_", name)


def runs_needing(kinds):
    """Runs whose model extraction is exactly ``kinds`` (activations and/or gradients)."""
    return [
        r for r in RUNS if set(NEEDS[r]) & {"activations", "gradients"} == set(kinds)
    ]


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


def get_local_checkpoint(wildcards):
    return ckcfg.local_checkpoints(config, wildcards.run)[int(wildcards.step)]


def get_final_outputs():
    out = []
    for run in RUNS:
        out += [
            f"results/{run}/metrics.parquet",
            f"results/{run}/analysis/pca.csv",
            f"results/{run}/analysis/correlation.csv",
            f"results/{run}/plots/trajectories",
            f"results/{run}/plots/pca.png",
            f"results/{run}/plots/correlation.png",
        ]
        if run in TRAINED_RUNS:
            out.append(f"results/{run}/plots/training.png")
    return out
