"""Aggregation (ckptlens.table.aggregate): fail on a missing step, or list the gaps."""

from __future__ import annotations

import pandas as pd
import pytest

from ckptlens.store.records import make_record
from ckptlens.store.tidy import write_table_record
from ckptlens.table.aggregate import MissingStepsError, collect_run_tables


def test_aggregation_policy_fail_or_list_the_gaps(tmp_path):
    good = tmp_path / "good.csv"
    pd.DataFrame([{"run": "r", "step": 0, "layer": "l", "metric": "m", "value": 1.5}]).to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    write_table_record(bad, make_record("/d/ckpt_5.pt", "refused — needs posix", 5))
    with pytest.raises(MissingStepsError, match=r"step 5: /d/ckpt_5.pt: refused"):
        collect_run_tables([good, bad], "fail")
    table, missing = collect_run_tables([good, bad, bad], "skip")
    assert table["step"].tolist() == [0]
    assert missing.to_dict("records") == [{"step": 5, "file": "/d/ckpt_5.pt", "reason": "refused — needs posix"}]
    with pytest.raises(MissingStepsError, match="every checkpoint failed"):
        collect_run_tables([bad], "skip")
    with pytest.raises(ValueError, match="on_bad_checkpoint"):
        collect_run_tables([good], "ignore")
