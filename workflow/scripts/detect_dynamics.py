"""Convergence steps and change points of every (layer, metric) trajectory of one run."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import json

    import pandas as pd

    from ckptlens.analysis.dynamics import detect_dynamics, log_columns, training_log_dynamics
    from ckptlens.store.atomic import atomic_path

    settings = json.loads(snakemake.params.settings)
    options = {k: settings[k] for k in ("tolerance", "max_change_points", "min_size")}
    found, notes = detect_dynamics(pd.read_parquet(snakemake.input.table), thresholds=settings["thresholds"], **options)
    if "log" in snakemake.input.keys():
        log = pd.read_csv(snakemake.input.log)  # a trained run's, or a Trainer's (loss, eval_*)
        from_log, log_notes = training_log_dynamics(log, snakemake.wildcards.run, log_columns(log), **options)
        found, notes = pd.concat([found, from_log], ignore_index=True), notes + log_notes
    with atomic_path(snakemake.output[0]) as tmp:
        found.to_csv(tmp, index=False)
    for n in notes:
        print(n)
    print(
        f"{(found.kind == 'change_point').sum()} change points, {(found.kind == 'converged').sum()} convergence steps"
    )
