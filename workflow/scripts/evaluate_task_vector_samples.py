"""Loss and accuracy on the held-out split of the task (torch/transformers only here) of the base, each
fine-tuned run, the mean of the runs and each sample drawn from the task-vector PCA."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import json

    import pandas as pd
    import torch

    from ckptlens.store.atomic import atomic_path
    from ckptlens.task_vectors.evaluate import evaluate_checkpoints

    torch.set_num_threads(snakemake.threads)
    evaluate = json.loads(snakemake.params.evaluate)
    rows = json.loads(snakemake.params.rows)  # [{kind, name, path}] in table order
    out = evaluate_checkpoints(evaluate["task"], rows, tokenizer=evaluate.get("tokenizer"), max_len=evaluate["max_len"])
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(out, columns=["kind", "name", "loss", "accuracy"]).to_csv(tmp, index=False, float_format="%.17g")
