# Config validation, the plan of the jobs (ckptlens.plan: chunks, parts, which files each job
# reads), wildcard constraints and the get_* input helpers. Paths: ckptlens.store.layout.
# Runs at parse time (also inside every cluster job): local files only, no network, no torch.
from ckptlens import config as ckcfg
from ckptlens import metrics as ckmetrics
from ckptlens.plan import Plan, alternatives, canonical, identifier
from ckptlens.store import layout

try:
    ckcfg.validate(config)
except ckcfg.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}") from None

PLAN = Plan(config)
RUNS = PLAN.runs
STEPS = PLAN.steps
TRAINED_RUNS = PLAN.trained_runs
FETCHED_RUNS = PLAN.fetched_runs
TABLE_RUNS = PLAN.table_runs
COMPUTED_RUNS = PLAN.computed_runs  # metrics computed here, not imported
TEMPORARY_RUNS = PLAN.temporary_runs  # checkpoints deleted once extracted
CHUNKS = PLAN.chunks  # materialisation and extraction: one job per chunk of steps
TASK_VECTORS = PLAN.task_vectors
TV_SAMPLE = PLAN.tv_sample
TV_EVALUATED = PLAN.tv_evaluated
STUDY = PLAN.study
FIGURES = PLAN.figures
DYNAMICS = PLAN.dynamics


wildcard_constraints:
    run=alternatives(RUNS),
    chunk=r"\d+",
    part=r"\d+",
    family=alternatives(ckmetrics.FAMILIES),
    name=alternatives(TASK_VECTORS),
    figure=alternatives(FIGURES),


def get_code(script, **fixed):
    """The code param of the job running scripts/<script>.py (ckptlens.plan.Plan.code); ``fixed``
    holds the wildcard values of the jobs generated per run."""
    return lambda wildcards: PLAN.code(script, **fixed, **dict(wildcards.items()))


# ---------------------------------------------------------------- input functions
def get_source_inputs(wildcards):
    return PLAN.source_inputs(wildcards.run, wildcards.chunk)


def get_checkpoint_digests(wildcards):
    return PLAN.checkpoint_digests(wildcards.run)


def get_metric_inputs(wildcards):
    return PLAN.metric_inputs(wildcards.run, wildcards.family, wildcards.part)


def get_family_tables(wildcards):
    return PLAN.family_tables(wildcards.run)


def get_analysis_inputs(wildcards):
    return PLAN.analysis_inputs(wildcards.run)


def get_dynamics_inputs(wildcards):
    return PLAN.dynamics_inputs(wildcards.run)


def get_figure_inputs(wildcards):
    return PLAN.figure_inputs(wildcards.figure)


def get_task_vector_inputs(wildcards):
    return PLAN.task_vector_dirs(wildcards.name)


def get_evaluation_inputs(wildcards):
    return PLAN.evaluation_inputs(wildcards.name)


def get_final_outputs():
    return PLAN.final_outputs() + PLAN.report_outputs()
