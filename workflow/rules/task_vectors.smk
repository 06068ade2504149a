# Task vectors across runs that share a base (fine-tuning seeds): PCA per layer across runs, and
# (optional `sample:`) new weights drawn from the principal components, evaluated on the task.
from ckptlens import task_vector_sampling as cktvs


rule task_vectors:
    input:
        unpack(get_task_vector_inputs),
    output:
        table="results/task_vectors/{name}/task_vectors.csv",
    log:
        "results/task_vectors/{name}/task_vectors.log",
    params:
        n_components=lambda w: TASK_VECTORS[w.name].get("n_components", 3),
        code=ckio.source_hash("metrics.task_vectors"),
    script:
        "../../scripts/task_vectors.py"


rule plot_task_vectors:
    input:
        "results/task_vectors/{name}/task_vectors.csv",
    output:
        report(
            "results/task_vectors/{name}/task_vectors.png",
            caption="../report/task_vectors.rst",
            category=STUDY,
            subcategory="task vectors: {name}",
            labels={"stage": "task vectors", "figure": "PCA per layer"},
        ),
    log:
        "results/task_vectors/{name}/plot.log",
    params:
        code=ckio.source_hash("task_vector_plots", "plots"),
    script:
        "../../scripts/plot_task_vectors.py"


# ---------------------------------------------------------------- sampling from the components
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


# One sampling job per task-vector set (its outputs, the n_samples files, differ per set).
for _name in TV_SAMPLE:

    rule:
        name:
            "sample_task_vectors_" + identifier(_name)
        input:
            tv_checkpoint_files(_name),
        output:
            mean=tv_sample_files(_name)["mean"],
            samples=tv_sample_files(_name)["samples"],
            components=f"results/task_vectors/{_name}/samples/components.csv",
            coefficients=f"results/task_vectors/{_name}/samples/coefficients.csv",
        log:
            f"results/task_vectors/{_name}/logs/sample.log",
        params:
            name=_name,
            base_run=TASK_VECTORS[_name]["base_run"],
            checkpoints=canonical(tv_checkpoints(_name)),
            sample=canonical(tv_sample_params(_name)),
            code=ckio.source_hash("task_vector_sampling", "io", "patterns"),
        script:
            "../../scripts/sample_task_vectors.py"


rule evaluate_task_vector_samples:
    input:
        lambda w: sorted({r["path"] for r in tv_evaluation_rows(w.name)}),
    output:
        table="results/task_vectors/{name}/samples.csv",
    log:
        "results/task_vectors/{name}/logs/evaluate_samples.log",
    wildcard_constraints:
        name=_alternatives(TV_EVALUATED),
    threads: 2
    params:
        evaluate=lambda w: canonical(tv_evaluate_params(w.name)),
        rows=lambda w: canonical(tv_evaluation_rows(w.name)),
        code=ckio.source_hash("minilm", "hf"),
    script:
        "../../scripts/evaluate_task_vector_samples.py"


rule plot_task_vector_samples:
    input:
        "results/task_vectors/{name}/samples.csv",
    output:
        report(
            "results/task_vectors/{name}/samples.png",
            caption="../report/task_vector_samples.rst",
            category=STUDY,
            subcategory="task vectors: {name}",
            labels={"stage": "task vectors", "figure": "sampled weights"},
        ),
    log:
        "results/task_vectors/{name}/logs/plot_samples.log",
    wildcard_constraints:
        name=_alternatives(TV_EVALUATED),
    params:
        settings=lambda w: canonical(tv_sample_params(w.name)),
        code=ckio.source_hash("task_vector_plots"),
    script:
        "../../scripts/plot_task_vector_samples.py"


def tv_final_outputs():
    """What `rule all` needs of the sampling: per set with `sample`, its samples' table of
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
