"""A Hugging Face Trainer run's training history as a training log.

The Trainer writes ``trainer_state.json`` into every ``checkpoint-N`` folder; its ``log_history``
holds, up to that step, one entry per logging step (``loss``, ``learning_rate``, ``grad_norm``,
``epoch``) and one per evaluation (``eval_loss``, ``eval_<metric>``), each with its ``step``, and
a summary at the end of training (``train_runtime``, ``train_loss``, ...). The last checkpoint's
file therefore holds the whole history. :func:`trainer_state_log` makes it the table a trained
run's ``train_log.csv`` is: one row per logged step, ``step`` first, then ``loss``,
``learning_rate`` and the other values (NaN where a step did not log one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..store.records import CheckpointError

#: leading columns of the log, in this order (where the history has them)
FIRST_COLUMNS = ("step", "loss", "learning_rate")
#: values that describe the run's speed or size, not its training: left out
_NOT_TRAINING = ("_runtime", "_per_second", "total_flos")


def _kept(key: str, value) -> bool:
    if key == "step" or any(key.endswith(s) for s in _NOT_TRAINING):
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def trainer_state_log(path) -> pd.DataFrame:
    """``log_history`` of a ``trainer_state.json`` as a training log (see the module docstring);
    a clear error naming the file where it is not one. The end-of-training summary (the entry
    with ``train_runtime``) is left out."""
    path = Path(path)
    try:
        state = json.loads(path.read_text())
        history = state["log_history"]
        if not isinstance(history, list):
            raise TypeError("log_history is not a list")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a Trainer state with a log_history ({type(exc).__name__}: {exc})") from exc
    rows: dict[int, dict] = {}
    for entry in history:
        if not isinstance(entry, dict) or "step" not in entry or "train_runtime" in entry:
            continue
        row = rows.setdefault(int(entry["step"]), {})
        for key, value in entry.items():
            if _kept(key, value) and key not in row:
                row[key] = float(value) if math.isfinite(value) else math.nan
    columns = sorted({k for row in rows.values() for k in row})
    order = [c for c in FIRST_COLUMNS[1:] if c in columns] + [c for c in columns if c not in FIRST_COLUMNS]
    return pd.DataFrame(
        [{"step": step, **{c: rows[step].get(c, math.nan) for c in order}} for step in sorted(rows)],
        columns=["step", *order],
    ).astype({"step": int})
