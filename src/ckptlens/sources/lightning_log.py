"""A PyTorch Lightning run's training history (its ``CSVLogger`` file) as a training log.

Lightning's ``CSVLogger`` writes ``<save_dir>/<name>/version_<N>/metrics.csv``: one row per logging
call, ``epoch`` and ``step`` (the global step, the number in ``epoch=E-step=S.ckpt``) beside the
union of every key logged (empty where a row did not log it); a value logged with both
``on_step`` and ``on_epoch`` appears as ``<key>_step`` and ``<key>_epoch``. Its checkpoints default
to ``version_<N>/checkpoints/``, so the file sits beside the checkpoints' folder.
A row's ``step`` is the number of optimizer steps taken when it was logged, so a loss logged at
step ``s`` was computed with the weights of checkpoint ``step=s``: the two share one step axis.
:func:`lightning_csv_log` makes it the table a trained run's ``train_log.csv`` is: one row per
logged step, ``step`` first, then ``loss`` (the training loss: ``train_loss_step``,
``train_loss`` or ``loss``, the first present) and the other logged values.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..store.records import CheckpointError

#: what the training loss is called in a Lightning log, most specific first (the per-step value
#: of a key logged on step and epoch, then the plain names)
TRAIN_LOSS_KEYS = ("train_loss_step", "train_loss", "loss")
#: columns that say when a row was logged, not what was measured
_NOT_MEASURED = ("epoch",)


def lightning_csv_log(path) -> pd.DataFrame:
    """``metrics.csv`` of a Lightning ``CSVLogger`` as a training log (see the module docstring);
    several rows at one step merge (the first value of each column wins). A clear error naming the
    file where it is not one."""
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a Lightning CSVLogger file ({type(exc).__name__}: {exc})") from exc
    if "step" not in raw.columns:
        raise CheckpointError(f"{path}: not a Lightning CSVLogger file (no 'step' column: {list(raw.columns)[:6]})")
    raw = raw.drop(columns=[c for c in _NOT_MEASURED if c in raw.columns])
    values = raw.drop(columns="step").apply(pd.to_numeric, errors="coerce")
    values = values.loc[:, values.notna().any()]  # text columns and never-logged keys
    values.insert(0, "step", pd.to_numeric(raw["step"], errors="coerce"))
    values = values[values["step"].notna()].astype({"step": "int64"})
    log = values.groupby("step", sort=True).first().reset_index()  # first non-missing per column
    loss = next((k for k in TRAIN_LOSS_KEYS if k in log.columns), None)
    if loss is not None:
        log = log.drop(columns=[k for k in TRAIN_LOSS_KEYS if k in log.columns and k != loss])
        log = log.rename(columns={loss: "loss"})
    rest = sorted(c for c in log.columns if c not in ("step", "loss"))
    return log[["step", *(["loss"] if loss is not None else []), *rest]]


__all__ = ["TRAIN_LOSS_KEYS", "lightning_csv_log"]
