"""Train a demo model (transformer or two-output MLP) and save its checkpoints
(a GPU-tagged job; runs on CPU without one)."""
import json
from pathlib import Path

from ckptlens.io import job_log

with job_log(snakemake.log[0]):
    import torch

    from ckptlens.toy.train import train_induction, train_two_forces

    torch.set_num_threads(snakemake.threads)
    src, train = json.loads(snakemake.params.source), json.loads(snakemake.params.train)
    paths = dict(zip(snakemake.params.steps, snakemake.output.checkpoints))
    settings = dict(
        total_steps=train["steps"],
        save_steps=snakemake.params.steps,
        checkpoint_path=lambda step: Path(paths[step]),
        log_path=Path(snakemake.output.log_csv),
        batch_size=train["batch_size"],
        lr=train["lr"],
        weight_decay=train["weight_decay"],
        log_every=train["log_every"],
        seed=train["seed"],
        data_seed=train["data_seed"],
    )
    if snakemake.params.kind == "train_mlp":
        from ckptlens.toy.mlp import TwoForcesConfig

        train_two_forces(TwoForcesConfig(**src.get("model", {})), **settings)
    else:
        from ckptlens.toy.model import ToyModelConfig
        from ckptlens.toy.tasks import InductionTaskConfig

        model_cfg = ToyModelConfig(**src.get("model", {}))
        task_cfg = InductionTaskConfig(vocab_size=model_cfg.vocab_size, **src.get("task", {}))
        train_induction(model_cfg, task_cfg, **settings)
