"""The notebook loaders (ckptlens.results) on results folders that lack an optional product."""

import pandas as pd
import pytest

from ckptlens import results
from ckptlens.store import layout


def test_no_task_vector_sets_is_an_empty_frame(tmp_path):
    tv = results.load_task_vectors(tmp_path)
    assert tv.empty and list(tv.columns) == results.TASK_VECTOR_COLUMNS
    with pytest.raises(FileNotFoundError, match="task_vectors.csv"):
        results.load_task_vectors(tmp_path, name="missing")


def test_a_run_without_a_training_log_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 'imported' has no training log"):
        results.load_training_log(tmp_path, run="imported")
    path = tmp_path / layout.train_log("t", ".")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"step": [1, 2], "loss": [2.0, 1.0]}).to_csv(path, index=False)
    assert results.load_training_log(tmp_path, run="t")["loss"].tolist() == [2.0, 1.0]
