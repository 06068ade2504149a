"""What a local source leaves out, said in one wording by `ckptlens layers`, `init` and the run."""

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from ckptlens.cli.layers import describe, format_layers, inspect_path
from ckptlens.sources import get_source
from ckptlens.sources.local import scan, skipped_notes, skipped_sentence


def numbered_with_extras(root: Path) -> Path:
    """ckpt_{0,20,40}.safetensors beside final.pt, best.safetensors and an optimizer state."""
    root.mkdir(parents=True)
    for step in (0, 20, 40):
        save_file({"w.weight": np.full((4, 4), step, np.float32)}, str(root / f"ckpt_{step}.safetensors"))
    save_file({"w.weight": np.ones((4, 4), np.float32)}, str(root / "best.safetensors"))
    (root / "final.pt").write_bytes(b"never opened")
    (root / "optimizer.pt").write_bytes(b"never opened")
    return root


def test_one_sentence_for_what_is_skipped(tmp_path):
    folder = numbered_with_extras(tmp_path / "run")
    d = scan(folder)
    notes = skipped_notes(d)
    assert skipped_sentence("final.pt", "why") == "skipped: final.pt: why"
    assert "skipped: best.safetensors: no step number in the name (rename it, or set step_pattern)" in notes
    assert "skipped: final.pt: no step number in the name (rename it, or set step_pattern)" in notes
    assert any(n.startswith("skipped: optimizer.pt: training state") for n in notes)
    # "final" is not silently the last numbered step: the notes say which step it is
    assert notes[-1].startswith("the final checkpoint (the reference of *_to_final metrics) is step 40")
    assert "best.safetensors, final.pt" in notes[-1]
    # the run (the local source's notes: import log, notes.txt) and `ckptlens layers` say the same lines
    assert get_source("local").notes({"type": "local", "path": str(folder)}) == notes
    text = format_layers(describe(inspect_path(str(folder))))
    for note in notes:
        assert f"  {note}\n" in text + "\n"


def test_nothing_skipped_nothing_said(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for step in (1, 2):
        save_file({"w.weight": np.zeros((2, 2), np.float32)}, str(folder / f"ckpt_{step}.safetensors"))
    assert skipped_notes(scan(folder)) == []
    assert get_source("local").training_log({"type": "local", "path": str(folder)}) is None
