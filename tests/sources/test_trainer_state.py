"""A Hugging Face Trainer's trainer_state.json as a training log (ckptlens.sources.trainer_state)."""

import json
import math

import pytest

from ckptlens.analysis.dynamics import LOG_COLUMNS, log_columns
from ckptlens.sources.trainer_state import trainer_state_log
from ckptlens.store.records import CheckpointError

HISTORY = [
    {"epoch": 0.5, "grad_norm": 1.5, "learning_rate": 1e-3, "loss": 4.0, "step": 1},
    {"epoch": 1.0, "grad_norm": 1.2, "learning_rate": 8e-4, "loss": 3.5, "step": 2},
    {
        "epoch": 1.0,
        "eval_loss": 3.6,
        "eval_accuracy": 0.25,
        "eval_runtime": 0.1,
        "eval_samples_per_second": 9.0,
        "step": 2,
    },
    {"epoch": 1.5, "grad_norm": 0.9, "learning_rate": 6e-4, "loss": 3.0, "step": 3},
    {"epoch": 1.5, "step": 3, "total_flos": 12.0, "train_loss": 3.5, "train_runtime": 1.0},
]


def test_log_history_is_one_row_per_step(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 3, "log_history": HISTORY}))
    log = trainer_state_log(state)
    assert list(log.columns[:3]) == ["step", "loss", "learning_rate"]
    assert {"eval_loss", "eval_accuracy", "grad_norm", "epoch"} <= set(log.columns)
    assert not {"eval_runtime", "eval_samples_per_second", "total_flos", "train_loss"} & set(log.columns)
    assert log["step"].tolist() == [1, 2, 3]
    assert log["loss"].tolist() == [4.0, 3.5, 3.0]
    assert log["eval_loss"].iloc[1] == 3.6 and math.isnan(log["eval_loss"].iloc[0])
    # what the dynamics of a Trainer run examine: its loss and evaluation metrics
    assert log_columns(log) == ["loss", "eval_accuracy", "eval_loss"]
    assert log_columns(log.drop(columns=["loss", "eval_loss", "eval_accuracy"])) == list(LOG_COLUMNS)


def test_not_a_trainer_state_names_the_file(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 3}))
    with pytest.raises(CheckpointError, match="trainer_state.json: not a Trainer state"):
        trainer_state_log(state)
