"""A PyTorch Lightning run's CSVLogger file as a training log (ckptlens.sources.lightning_log), and
the local source finding it beside the checkpoints. The file below is what Lightning 2.6.6's
CSVLogger wrote for a real 6-step run (train_loss logged on step and epoch, validation every 3
batches); the run itself, through the workflow, is tests/workflow/test_local_run_notes.py."""

import math

import numpy as np
import pytest
import torch

from ckptlens.sources import get_source
from ckptlens.sources.lightning_log import lightning_csv_log
from ckptlens.store.records import CheckpointError

METRICS_CSV = """epoch,step,train_loss_epoch,train_loss_step,val_loss
0,0,,3.2748498916625977,
0,1,,4.42722749710083,
0,2,,2.733062505722046,
0,2,,,3.3616673946380615
0,3,,4.4589762687683105,
0,4,,2.3554017543792725,
0,5,,3.883021593093872,
0,5,,,2.822967529296875
0,5,3.522089958190918,,
"""


def test_one_row_per_step_with_the_per_step_loss_as_the_loss(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    log = lightning_csv_log(path)
    assert log.columns.tolist() == ["step", "loss", "train_loss_epoch", "val_loss"]  # no epoch
    assert log["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert log["loss"].tolist() == pytest.approx([3.27485, 4.42723, 2.73306, 4.45898, 2.35540, 3.88302], abs=1e-5)
    # a training row and a validation row at one step merge into one row holding both
    assert log.loc[log["step"] == 2, "val_loss"].item() == pytest.approx(3.36167, abs=1e-5)
    assert log.loc[log["step"] == 5, ["val_loss", "train_loss_epoch"]].to_numpy().tolist() == [
        pytest.approx([2.82297, 3.52209], abs=1e-5)
    ]
    assert math.isnan(log.loc[log["step"] == 1, "val_loss"].item())


def test_the_plain_train_loss_key_is_the_loss_too(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train_loss,val_acc\n0,9,0.5,\n0,19,0.25,\n0,19,,0.75\n")
    log = lightning_csv_log(path)
    assert log.columns.tolist() == ["step", "loss", "val_acc"]
    assert log["loss"].tolist() == [0.5, 0.25] and log["val_acc"].tolist()[1] == 0.75


def test_not_a_lightning_log_names_the_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss\n0,1.0\n")
    with pytest.raises(CheckpointError, match=r"metrics.csv: not a Lightning CSVLogger file \(no 'step' column"):
        lightning_csv_log(path)


def _ckpt(folder, step):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": {"w": torch.from_numpy(np.ones((2, 2), np.float32))}}, folder / f"epoch=0-step={step}.ckpt"
    )


def test_the_local_source_finds_the_log_beside_the_checkpoints_folder(tmp_path):
    version = tmp_path / "run" / "version_0"
    for step in (2, 4):
        _ckpt(version / "checkpoints", step)
    (version / "metrics.csv").write_text(METRICS_CSV)
    spec = {"type": "local", "path": str(version / "checkpoints")}
    assert get_source("local").steps(spec) == [2, 4]
    assert get_source("local").training_log(spec) == str(version / "metrics.csv")


def test_checkpoints_without_a_log_have_none(tmp_path):
    _ckpt(tmp_path / "checkpoints", 5)
    assert get_source("local").training_log({"type": "local", "path": str(tmp_path / "checkpoints")}) is None
