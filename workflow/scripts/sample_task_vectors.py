"""Weights sampled from the task-vector principal components of runs that share a base (numpy only):
the mean of the runs and n_samples draws, each a complete checkpoint (the base's other tensors and
its metadata, so that it loads like the base), plus the per-layer components and coefficients."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import csv
    import json

    from ckptlens.sources.readers import CheckpointTensors
    from ckptlens.store.atomic import atomic_path
    from ckptlens.store.tensors import write_tensors
    from ckptlens.task_vectors.sampling import TaskVectorSampler, check_shared_base, run_weights

    name = snakemake.params.name
    paths = json.loads(snakemake.params.checkpoints)  # {"base": path, "runs": {run: path}, "starts": {run: path}}
    settings = json.loads(snakemake.params.sample)
    # checkpoints trained or converted here, or references to the user's files: read where they are
    base = CheckpointTensors(paths["base"])
    runs = {run: CheckpointTensors(p) for run, p in paths["runs"].items()}

    differ = check_shared_base(base, {r: CheckpointTensors(p) for r, p in paths["starts"].items()}, settings["layers"])
    if differ:
        detail = "; ".join(f"{r}: {len(v)} tensors, e.g. {v[:3]}" for r, v in differ.items())
        raise ValueError(
            f"task_vectors.{name}: the runs do not start from the base checkpoint {paths['base']} in sampled "
            f"tensors ({detail}), so those tensors have no task vector from it. Fine-tune every run from one "
            f"base (MiniLM: examples/minilm/finetune.py --head-seed 0), or leave the tensors out with "
            f"task_vectors.{name}.sample.layers."
        )
    unchecked = [r for r in runs if r not in paths["starts"] and r != snakemake.params.base_run]
    if unchecked:
        print(f"note: runs {unchecked} have no checkpoint at the base step; their start is not compared with the base")

    sampler = TaskVectorSampler(
        base,
        runs,
        layers=settings["layers"],
        n_components=settings["n_components"],
        scale=settings["scale"],
        seed=settings["seed"],
        coupling=settings["coupling"],
    )
    sampled = sampler.sampled_layers()
    print(f"{len(sampled)} of {len(base)} tensors sampled across {len(runs)} runs ({settings['coupling']} coupling)")

    def metadata(point):
        return {
            **base.metadata,
            "ckptlens_source": f"task_vectors.{name}: {point}",
            "ckptlens_task_vectors": json.dumps(
                {"name": name, "point": point, "base": paths["base"], "runs": paths["runs"], **settings}, sort_keys=True
            ),
        }

    points = {"mean": (snakemake.output.mean, sampler.mean(), None)}
    for i, path in enumerate(snakemake.output.samples):
        points[f"sample{i}"] = (path, sampler.sample(i), i)
    for point, (path, weights, _) in points.items():
        write_tensors(iter(weights.items()), path, metadata(point))
        print(f"wrote {point}: {path}")

    with atomic_path(snakemake.output.components) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["layer", "component", "sigma", "variance", "explained_variance_ratio"])
        w.writeheader()
        w.writerows(sampler.summary())
    with atomic_path(snakemake.output.coefficients) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["point", "layer", "coefficient", "value"])  # z.pc{i}: PC coordinate; weight.<run>: a_j
        for point, (_, _, i) in points.items():
            for layer in sampled:
                fit = sampler.fit(layer)
                z = sampler.z(i, layer) if i is not None else [0.0] * fit.n_components
                for c, v in enumerate(z):
                    w.writerow([point, layer, f"z.pc{c + 1}", repr(float(v))])
                for run, a in zip(sampler.runs, run_weights(fit, z)):
                    w.writerow([point, layer, f"weight.{run}", repr(float(a))])
