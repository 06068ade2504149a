"""One metric family on one checkpoint -> a small tidy CSV (numpy only)."""

import json
import time

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.metrics import FAMILIES, compute_family
    from ckptlens.metrics.inputs import open_metric_inputs
    from ckptlens.store.patterns import select_layers
    from ckptlens.store.tidy import write_rows_csv, write_table_record

    family, step = snakemake.wildcards.family, int(snakemake.wildcards.step)
    grouped = FAMILIES[family].needs == "gradients"
    # a reference whose checkpoint failed comes back as Unavailable: its metrics are NaN
    current, references, record = open_metric_inputs(snakemake.input, group_gradients=grouped)
    if record is not None:  # this checkpoint failed (on_bad_checkpoint: skip): a table record
        write_table_record(snakemake.output[0], {**record, "step": step})
        print(f"step {step} failed ({record['file']}: {record['reason']}); no values, recorded as a gap")
    else:
        current = select_layers(current, json.loads(snakemake.params.layers))
        started = time.perf_counter()
        rows = compute_family(
            family,
            json.loads(snakemake.params.metrics),
            current,
            references,
            run=snakemake.wildcards.run,
            step=step,
        )
        print(f"metric computation: {time.perf_counter() - started:.4f} s")
        write_rows_csv(rows, snakemake.output[0])
        print(f"{len(rows)} values")
