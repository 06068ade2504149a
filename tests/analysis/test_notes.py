"""Notes of the analysis (ckptlens.analysis.notes): missing steps."""

from __future__ import annotations

import numpy as np

from ckptlens.analysis import (
    missing_steps,
)
from tests.analysis.helpers import make_table


def test_missing_steps():
    table = make_table({"a": np.zeros((3, 1))}, layers=["l.0"], steps=[0, 2, 8])
    assert missing_steps(table, [0, 1, 2, 4, 8, 16]) == [1, 4, 16]
    assert missing_steps(table, [8, 0]) == []
    assert missing_steps(table.iloc[0:0], [3, 1]) == [1, 3]
