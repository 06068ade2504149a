"""A PyTorch Lightning run as a local source: its checkpoints and its CSVLogger history
(ckptlens.sources.lightning_log), from a real Trainer run of a tiny module."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ckptlens.sources import get_source
from ckptlens.sources.lightning_log import lightning_csv_log
from ckptlens.sources.readers import open_checkpoint
from ckptlens.store.records import CheckpointError


def _lightning_run(root):
    """6 steps of a tiny regressor, a checkpoint every 2 steps, validation every 3 batches, the
    training loss logged on step and epoch: root/run/version_0/{metrics.csv,checkpoints/}."""
    import lightning as L
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
    x = torch.randn(48, 4)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    trainer = L.Trainer(
        max_steps=6,
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
def lightning_run(tmp_path_factory):
    return _lightning_run(tmp_path_factory.mktemp("lightning"))


def test_a_lightning_run_is_its_checkpoints_and_its_logged_loss(lightning_run):
    spec = {"type": "local", "path": str(lightning_run / "checkpoints")}
    source = get_source("local")
    assert source.steps(spec) == [2, 4, 6]  # epoch=0-step=N.ckpt
    with open_checkpoint(lightning_run / "checkpoints" / "epoch=0-step=6.ckpt") as ckpt:
        assert "net.0.weight" in ckpt.keys  # the LightningModule's state dict, unwrapped
    assert source.training_log(spec) == str(lightning_run / "metrics.csv")

    raw = pd.read_csv(lightning_run / "metrics.csv")
    log = lightning_csv_log(lightning_run / "metrics.csv")
    assert log.columns[:2].tolist() == ["step", "loss"]
    assert {"val_loss", "train_loss_epoch"} <= set(log.columns) and "epoch" not in log.columns
    # the per-step training loss as Lightning wrote it, one row per step
    per_step = raw.dropna(subset=["train_loss_step"]).set_index("step")["train_loss_step"]
    assert log.set_index("step")["loss"].dropna().to_dict() == pytest.approx(per_step.to_dict())
    # validation rows share a step with a training row: merged into one row with both values
    val = raw.dropna(subset=["val_loss"]).set_index("step")["val_loss"]
    assert len(val) == 2
    merged = log.set_index("step")
    for step, value in val.items():
        assert merged.loc[step, "val_loss"] == pytest.approx(value)
        assert math.isfinite(merged.loc[step, "loss"])
    assert log["step"].is_monotonic_increasing and log["step"].is_unique


def test_not_a_lightning_log_names_the_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss\n0,1.0\n")
    with pytest.raises(CheckpointError, match=r"metrics.csv: not a Lightning CSVLogger file \(no 'step' column"):
        lightning_csv_log(path)


def test_checkpoints_without_a_log_have_none(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"state_dict": {"w": torch.from_numpy(np.ones((2, 2), np.float32))}}, folder / "epoch=0-step=5.ckpt")
    assert get_source("local").training_log({"type": "local", "path": str(folder)}) is None
