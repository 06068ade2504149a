"""Failure records (ckptlens.store.records): never read as a result."""

from __future__ import annotations

import pandas as pd
import pytest

from ckptlens.sources.readers import CheckpointError, open_checkpoint
from ckptlens.store.failures import checkpoint_record, write_checkpoint_record
from ckptlens.store.records import FailureRecordError, make_record
from ckptlens.store.tensors import TensorFile
from ckptlens.store.tidy import table_record, write_table_record
from tests.helpers import _tiny_checkpoint, figure


def test_a_failure_record_is_never_read_as_a_result(tmp_path):
    rec = make_record("/data/ckpt_40.safetensors", "empty file (0 bytes)", 40)
    write_checkpoint_record(tmp_path / "step40.safetensors", rec)
    assert checkpoint_record(tmp_path / "step40.safetensors") == rec
    with pytest.raises(CheckpointError, match=r"failure record of step 40 \(/data/ckpt_40.safetensors: empty file"):
        open_checkpoint(tmp_path / "step40.safetensors")
    with pytest.raises(FailureRecordError, match="ckpt_40"):
        TensorFile(tmp_path / "step40.safetensors")
    assert checkpoint_record(_tiny_checkpoint(tmp_path / "real.safetensors")) is None

    write_table_record(tmp_path / "step40.csv", rec)
    assert table_record(tmp_path / "step40.csv") == rec
    naive = pd.read_csv(tmp_path / "step40.csv")  # a reader that knows nothing of records
    assert not {"run", "step", "metric", "value"} & set(naive.columns)
    figure("failure record", "never read as a result (checkpoint, extraction, metric table)", "refused with the reason")
