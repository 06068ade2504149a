"""One metric family on a part of a run's checkpoints -> a small tidy CSV (numpy only); the steps
whose checkpoint failed are recorded at its top."""

import json
import time

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.metrics import FAMILIES, compute_family
    from ckptlens.metrics.inputs import open_metric_inputs
    from ckptlens.store.patterns import select_layers
    from ckptlens.store.tidy import write_rows_csv

    family, run = snakemake.wildcards.family, snakemake.wildcards.run
    grouped = FAMILIES[family].needs == "gradients"
    metrics, layers = json.loads(snakemake.params.metrics), json.loads(snakemake.params.layers)
    weights = json.loads(snakemake.params.weights)  # the weight targets, read from the checkpoints
    rows, records, seconds = [], [], 0.0
    for step, files in json.loads(snakemake.params.files).items():
        step = int(step)
        # a reference whose checkpoint failed comes back as Unavailable: its metrics are NaN
        current, references, record = open_metric_inputs(files, group_gradients=grouped, weights=weights)
        if record is not None:  # this checkpoint failed (on_bad_checkpoint: skip): a gap
            records.append({**record, "step": step})
            print(f"step {step} failed ({record['file']}: {record['reason']}); no values, recorded as a gap")
            continue
        started = time.perf_counter()
        rows += compute_family(family, metrics, select_layers(current, layers), references, run=run, step=step)
        seconds += time.perf_counter() - started
    print(f"metric computation: {seconds:.4f} s")
    write_rows_csv(rows, snakemake.output[0], records)
    print(f"{len(rows)} values, {len(records)} failed steps")
