"""One metric family on one checkpoint -> a small tidy CSV (numpy only)."""
import json
import time

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    from ckptlens.io import TensorFile, select_layers, write_rows_csv
    from ckptlens.metrics import FAMILIES, compute_family

    family = snakemake.wildcards.family
    grouped = FAMILIES[family].needs == "gradients"
    inputs = {k: TensorFile(v, group_gradients=grouped) for k, v in snakemake.input.items()}
    current = select_layers(inputs.pop("current"), json.loads(snakemake.params.layers))
    started = time.perf_counter()
    rows = compute_family(
        family,
        json.loads(snakemake.params.metrics),
        current,
        inputs,
        run=snakemake.wildcards.run,
        step=int(snakemake.wildcards.step),
    )
    print(f"metric computation: {time.perf_counter() - started:.4f} s")
    write_rows_csv(rows, snakemake.output[0])
    print(f"{len(rows)} values")
