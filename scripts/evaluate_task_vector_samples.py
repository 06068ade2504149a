"""Loss and accuracy on the held-out split of the task (torch/transformers only here) of the base, each
fine-tuned run, the mean of the runs and each sample drawn from the task-vector PCA."""
from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import json

    import pandas as pd
    import torch

    from ckptlens.io import atomic_path

    torch.set_num_threads(snakemake.threads)
    evaluate = json.loads(snakemake.params.evaluate)
    rows = json.loads(snakemake.params.rows)  # [{kind, name, path}] in table order
    if evaluate["task"] != "minilm_sentiment":
        raise ValueError(f"unknown evaluation task {evaluate['task']!r}")
    from ckptlens.minilm import evaluate_checkpoint, load_task_tokenizer

    tokenizer = load_task_tokenizer(evaluate.get("tokenizer"))
    out = []
    for row in rows:
        m = evaluate_checkpoint(row["path"], tokenizer, max_len=evaluate["max_len"])
        out.append({"kind": row["kind"], "name": row["name"], "loss": m["loss"], "accuracy": m["accuracy"]})
        print(f"{row['kind']:9s} {row['name']:24s} loss {m['loss']:.4f} accuracy {m['accuracy']:.4f}")
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(out, columns=["kind", "name", "loss", "accuracy"]).to_csv(tmp, index=False, float_format="%.17g")
