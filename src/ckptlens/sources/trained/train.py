"""Seeded, deterministic (on CPU) training of the demo model, saving safetensors checkpoints."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from ...store.atomic import atomic_path
from ...store.tensors import write_tensors
from ..devices import pick_device
from .configs import TwoForcesConfig, train_settings
from .induction import InductionTask, InductionTaskConfig
from .transformer import AttnOnlyTransformer, ToyModelConfig

LOG_COLUMNS = ["step", "loss", "id_error", "ood_error", "seconds"]


def train_run(spec: Mapping, steps: list[int], paths: list, log_path) -> None:
    """Train a trained run's model (its source ``spec``), writing ``paths[i]`` at ``steps[i]`` and the log to ``log_path``."""
    t = train_settings(spec)
    by_step = dict(zip(steps, paths))
    settings = dict(
        total_steps=t["steps"],
        save_steps=list(steps),
        checkpoint_path=lambda step: Path(by_step[step]),
        log_path=Path(log_path),
        batch_size=t["batch_size"],
        lr=t["lr"],
        weight_decay=t["weight_decay"],
        log_every=t["log_every"],
        seed=t["seed"],
        data_seed=t["data_seed"],
    )
    if spec["type"] == "train_mlp":
        train_two_forces(TwoForcesConfig(**spec.get("model", {})), **settings)
    else:
        model_cfg = ToyModelConfig(**spec.get("model", {}))
        train_induction(
            model_cfg, InductionTaskConfig(vocab_size=model_cfg.vocab_size, **spec.get("task", {})), **settings
        )


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """The model's state dict as a safetensors file, atomically."""
    write_tensors({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, path, metadata)


def checkpoint_metadata(model_cfg: ToyModelConfig, task_cfg: InductionTaskConfig, step: int) -> dict[str, str]:
    return {
        "ckptlens_arch": "toy",
        "ckptlens_model": json.dumps(model_cfg.to_dict()),
        "ckptlens_task": json.dumps(task_cfg.to_dict()),
        "step": str(step),
    }


def train_induction(model_cfg: ToyModelConfig, task_cfg: InductionTaskConfig, **kwargs) -> list[dict]:
    """Train the attention-only transformer on the induction task (see :func:`train_model`)."""
    meta = checkpoint_metadata(model_cfg, task_cfg, 0)
    return train_model(lambda: AttnOnlyTransformer(model_cfg), InductionTask(task_cfg), meta, **kwargs)


def train_two_forces(cfg, **kwargs) -> list[dict]:
    """Train the two-output MLP on the two-forces task (see :func:`train_model`)."""
    from .mlp import TwoForcesTask, TwoOutputMLP

    meta = {
        "ckptlens_arch": "mlp",
        "ckptlens_model": json.dumps(cfg.to_dict()),
        "ckptlens_task": json.dumps(cfg.to_dict()),
    }
    return train_model(lambda: TwoOutputMLP(cfg), TwoForcesTask(cfg), meta, **kwargs)


def train_model(
    build_model,
    task,
    metadata: dict[str, str],
    *,
    total_steps: int,
    save_steps: list[int],
    checkpoint_path,  # callable step -> Path
    log_path: Path,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    log_every: int = 10,
    eval_size: int = 256,
    seed: int = 0,
    data_seed: int | None = None,
    device: str | None = None,
) -> list[dict]:
    """Seeded AdamW training (``seed``: initialisation; ``data_seed``: batch order, default seed+1); saves a checkpoint at each of ``save_steps`` and logs the loss
    (mean over the last ``log_every`` steps) with in-/out-of-distribution error."""
    dev = torch.device(device) if device else pick_device()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model = build_model().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    data_gen = torch.Generator().manual_seed(seed + 1 if data_seed is None else data_seed)
    id_eval, ood_eval = (t.to(dev) for t in task.eval_sets(eval_size, seed + 2))
    save_at = set(save_steps)
    rows, running, t0 = [], [], time.perf_counter()

    def log(step: int) -> None:
        model.eval()
        with torch.no_grad():
            loss = float(task.loss(model, id_eval)) if not running else sum(running) / len(running)
        rows.append(
            {
                "step": step,
                "loss": loss,
                "id_error": task.error(model, id_eval),
                "ood_error": task.error(model, ood_eval),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        running.clear()
        model.train()

    for step in range(total_steps + 1):
        if step in save_at:
            save_checkpoint(model, checkpoint_path(step), {**metadata, "step": str(step)})
        if step % log_every == 0:
            log(step)
        if step == total_steps:
            break
        loss = task.loss(model, task.train_batch(batch_size, data_gen).to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
    write_log(rows, log_path)
    return rows


def write_log(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        w.writeheader()
        w.writerows(rows)
