"""A run over local checkpoints says what it leaves out, reads a Hugging Face Trainer's history as
its training log, and a failed aggregation leaves nothing made from the table before it.

One project, three local runs: ``toys`` (numbered toy checkpoints with ``final.pt`` and
``best.safetensors`` beside them), ``trainer`` (the checkpoint-N folders of a real tiny
transformers Trainer run with evaluation) and ``lightning`` (the ``epoch=E-step=S.ckpt`` files of a
real PyTorch Lightning run, its CSVLogger file beside them), weight metrics only."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import copy_project, scheduled_jobs, snakemake

pytestmark = pytest.mark.slow

CONFIG = """
runs:
  toys:
    source: {type: local, path: TOYS}
    targets:
      weights: ["blocks.*.attn.*"]
  trainer:
    source: {type: local, path: TRAINER}
  lightning:
    source: {type: local, path: LIGHTNING}
metrics:
  frobenius_norm: {}
  effective_rank: {}
"""


def train_tiny_neox(out: Path) -> Path:
    """A real transformers Trainer run: a 2-layer GPT-NeoX from its config, 6 steps, a checkpoint
    and an evaluation every 2 (checkpoint-2, -4, -6 with trainer_state.json and optimizer.pt)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    class Items(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 64, (16,), generator=g) for _ in range(40)]
    items = [{"input_ids": x, "labels": x.clone()} for x in ids]
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=6,
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    model = transformers.GPTNeoXForCausalLM(cfg)
    transformers.Trainer(
        model=model, args=args, train_dataset=Items(items[:32]), eval_dataset=Items(items[32:])
    ).train()
    return out


def train_tiny_lightning(root: Path) -> Path:
    """A real Lightning run: a tiny regressor, 8 steps, a checkpoint every 2, validation every 3
    batches, the training loss logged on step and epoch: root/run/version_0/{metrics.csv,checkpoints/}."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    trainer = L.Trainer(
        max_steps=8,
        log_every_n_steps=1,
        val_check_interval=3,
        logger=CSVLogger(root, name="run"),
        callbacks=[ModelCheckpoint(every_n_train_steps=2, save_top_k=-1)],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Regressor(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))
    return root / "run" / "version_0"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, local_checkpoints):
    root = tmp_path_factory.mktemp("local_notes")
    toys = root / "toys"
    shutil.copytree(local_checkpoints / "ckpts", toys)  # ckpt_{0,20,40}.safetensors
    shutil.copy(toys / "ckpt_40.safetensors", toys / "best.safetensors")
    shutil.copy(toys / "ckpt_40.safetensors", toys / "final.pt")  # no step number: never opened
    trainer = train_tiny_neox(root / "trainer")
    assert sorted(p.name for p in trainer.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    lightning = train_tiny_lightning(root / "lightning")
    project = copy_project(root / "project")
    config = CONFIG.replace("TOYS", str(toys)).replace("TRAINER", str(trainer))
    (project / "config/config.yaml").write_text(config.replace("LIGHTNING", str(lightning / "checkpoints")))
    snakemake(project, "--cores", "2")
    return {"project": project, "toys": toys, "trainer": trainer, "lightning": lightning}


def test_what_a_run_skips_it_says_in_the_words_of_ckptlens_layers(runs):
    from ckptlens.cli.layers import describe, format_layers, inspect_path
    from ckptlens.sources.local import scan, skipped_notes

    project, toys = runs["project"], runs["toys"]
    notes = skipped_notes(scan(toys))
    assert "skipped: final.pt: no step number in the name (rename it, or set step_pattern)" in notes
    assert "skipped: best.safetensors: no step number in the name (rename it, or set step_pattern)" in notes
    assert any(n.startswith("the final checkpoint (the reference of *_to_final metrics) is step 40") for n in notes)
    layers = format_layers(describe(inspect_path(str(toys)))).splitlines()
    run = project / "results/runs/toys"
    log = "".join(p.read_text() for p in (run / "logs/materialise_checkpoints").glob("*.log")).splitlines()
    analysis_notes = (run / "analysis/notes.txt").read_text().splitlines()
    report = (run / "report/pca.html").read_text()
    for note in notes:
        assert f"  {note}" in layers  # the same sentence, from the same function
        assert note in log and note in analysis_notes
        assert note.split(" (")[0] in report
    # the trainer run leaves out nothing (its checkpoint folders' optimizer states are inside them)
    assert "skipped" not in (project / "results/runs/trainer/analysis/notes.txt").read_text()


def test_a_trainer_run_has_its_training_log(runs):
    from ckptlens.results import load_analysis, load_training_log
    from ckptlens.sources.trainer_state import trainer_state_log

    project, trainer = runs["project"], runs["trainer"]
    log = load_training_log(project / "results", run="trainer")
    want = trainer_state_log(trainer / "checkpoint-6" / "trainer_state.json")
    pd.testing.assert_frame_equal(log, want, check_dtype=False)
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert {"loss", "learning_rate", "eval_loss"} <= set(log.columns) and log["loss"].notna().all()
    assert log["eval_loss"].notna().sum() == 3  # evaluated at steps 2, 4, 6
    run = project / "results/runs/trainer"
    assert (run / "plots/training.png").stat().st_size > 0
    dyn_log = (run / "logs/detect_dynamics.log").read_text()
    assert "no column 'id_error'" not in dyn_log  # the Trainer's columns, not a trained run's
    dynamics = load_analysis(project / "results", run="trainer")["dynamics"]
    assert "dynamics" in load_analysis(project / "results", run="trainer") and len(dynamics.columns)
    # the history is an input: another trainer_state.json in the last checkpoint remakes the log
    state = trainer / "checkpoint-6" / "trainer_state.json"
    text = state.read_text()
    state.write_text(text.replace('"log_history": [', '"log_history": [{"loss": 9.0, "step": 0}, ', 1))
    rules = {rule for rule, _ in scheduled_jobs(project)}
    state.write_text(text)
    assert "training_log" in rules and "aggregate_metrics" not in rules
    # a run without one: no training log job, no training plot
    assert not (project / "results/runs/toys/train_log.csv").exists()
    assert not (project / "results/runs/toys/plots/training.png").exists()


def test_a_failed_aggregation_leaves_nothing_made_from_the_table_before(runs):
    """A new unreadable checkpoint under on_bad_checkpoint: fail: no table, and none of the
    analyses, plots and report pages of the previous one (the training plot is the log's: kept)."""
    from ckptlens.plan import Plan

    project, toys = runs["project"], runs["toys"]
    cfg = yaml.safe_load((project / "config/config.yaml").read_text())
    cfg["on_bad_checkpoint"] = "fail"
    (project / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    products = [project / p for p in Plan(cfg).table_products("toys")]
    assert all(p.exists() for p in products), [p for p in products if not p.exists()]
    trainer_files = sorted(p for p in (project / "results/runs/trainer").rglob("*") if p.is_file())
    (toys / "ckpt_60.safetensors").write_bytes(b"not a safetensors file")
    proc = snakemake(project, "--cores", "2", "--keep-going", check=False)
    assert proc.returncode != 0
    run = project / "results/runs/toys"
    assert not (run / "metrics.parquet").exists()
    assert [p for p in products if p.exists()] == []
    log = (run / "logs/aggregate.log").read_text()
    assert "checkpoint(s) failed and on_bad_checkpoint is 'fail'" in log
    assert "removed what was made from its previous table" in log and "analysis/pca.csv" in log
    # the other run keeps every file
    assert sorted(p for p in (project / "results/runs/trainer").rglob("*") if p.is_file()) == trainer_files


def test_a_lightning_run_has_its_training_log_correlated_with_its_metrics(runs):
    from ckptlens.results import load_training_log
    from ckptlens.sources.lightning_log import lightning_csv_log

    project, lightning = runs["project"], runs["lightning"]
    log = load_training_log(project / "results", run="lightning")
    pd.testing.assert_frame_equal(log, lightning_csv_log(lightning / "metrics.csv"), check_dtype=False)
    assert log["step"].tolist() == list(range(8)) and log["loss"].notna().all()  # one row per step
    # the metrics at steps 2, 4, 6, 8 against the loss logged at 2, 4, 6 (8 is past the last logged
    # step, 7: not extrapolated): a plain Pearson r of the layer-mean trajectory over those steps
    table = pd.read_parquet(project / "results/runs/lightning/metrics.parquet")
    assert sorted(table["step"].unique()) == [2, 4, 6, 8]
    norms = table.query("metric == 'frobenius_norm'").pivot(index="step", columns="layer", values="value")
    steps = [2, 4, 6]
    expected = np.corrcoef(norms.loc[steps].mean(axis=1), log.set_index("step").loc[steps, "loss"])[0, 1]
    corr = pd.read_csv(project / "results/runs/lightning/analysis/correlation.csv")
    row = corr.query("x_metric == 'frobenius_norm' and y_metric == 'train_loss'")
    assert row["n_steps"].item() == 3
    assert row["pearson_r"].item() == pytest.approx(expected, abs=1e-9)
