# ckptlens: how every layer of a network changes over training.
# Stages: source -> checkpoints -> extraction -> metrics -> tidy table -> analysis -> plots/report.
from snakemake.utils import min_version

min_version("9.0")


# The demo config, unless one is given (--configfile would otherwise be merged into it).
if not config:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/task_vectors.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
