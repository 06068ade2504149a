"""Local discovery (ckptlens.sources.local): folders of mixed formats, globs, step patterns, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from ckptlens.sources.local import DiscoveryError, discover  # noqa: E402
from tests.sources.helpers import _sd  # noqa: E402


# ---------------------------------------------------------------------------------------------
# discovery
def _touch_ckpt(path: Path, seed=0):
    sd = _sd(seed)
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    elif path.suffix in (".pt", ".bin"):
        torch.save(sd, path)
    else:  # HF folder
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
        save_file(sd, str(path / "model.safetensors"))
    return path


def test_discover_folder_mixed_formats(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    expected = {
        100: _touch_ckpt(run / "ckpt_100.pt"),
        2000: _touch_ckpt(run / "ckpt_2000.safetensors"),
        300: _touch_ckpt(run / "step300"),
        400: _touch_ckpt(run / "checkpoint-400"),
        500: _touch_ckpt(run / "model_step_500.safetensors"),
        600: _touch_ckpt(run / "weights-600.bin"),
    }
    (run / "notes.txt").write_text("not a checkpoint")
    (run / "logs").mkdir()  # a folder that is no checkpoint
    _touch_ckpt(run / "final.pt")  # no step number: skipped with a warning
    with pytest.warns(UserWarning, match="final.pt"):
        found = discover({"path": str(run)})
    assert found == dict(sorted(expected.items()))
    assert list(found) == sorted(found)


def test_discover_globs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for s in (0, 10, 20):
        _touch_ckpt(run / f"ckpt_{s}.pt")
        _touch_ckpt(run / f"ckpt_{s}.safetensors")
    assert discover({"path": str(run / "ckpt_*.pt")}) == {s: run / f"ckpt_{s}.pt" for s in (0, 10, 20)}
    # the step in the folder, the file without a number
    for s in (5, 15):
        (run / f"step{s}").mkdir()
        _touch_ckpt(run / f"step{s}" / "model.safetensors")
    assert discover(str(run / "step*" / "model.safetensors")) == {
        s: run / f"step{s}" / "model.safetensors" for s in (5, 15)
    }


def test_discover_step_pattern(tmp_path):
    for e, s in ((1, 100), (2, 50)):
        _touch_ckpt(tmp_path / f"epoch{e}_step{s}.pt")
    assert discover({"path": str(tmp_path), "step_pattern": r"step(\d+)"}) == {
        50: tmp_path / "epoch2_step50.pt",
        100: tmp_path / "epoch1_step100.pt",
    }
    assert discover({"path": str(tmp_path), "step_pattern": r"epoch(\d+)_"}) == {
        1: tmp_path / "epoch1_step100.pt",
        2: tmp_path / "epoch2_step50.pt",
    }
    with pytest.raises(DiscoveryError, match="exactly one group"):
        discover({"path": str(tmp_path), "step_pattern": r"step\d+"})


def test_discover_duplicate_steps_name_both(tmp_path):
    a = _touch_ckpt(tmp_path / "ckpt_100.pt")
    b = _touch_ckpt(tmp_path / "ckpt_0100.safetensors")
    with pytest.raises(DiscoveryError) as err:
        discover({"path": str(tmp_path)})
    assert str(a) in str(err.value) and str(b) in str(err.value) and "step 100" in str(err.value)


def test_discover_nothing_found_names_the_path(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DiscoveryError, match=str(tmp_path)):
        discover({"path": str(tmp_path)})
    with pytest.raises(DiscoveryError, match="does not exist"):
        discover({"path": str(tmp_path / "nope")})
    with pytest.raises(DiscoveryError, match="ckpt_\\*.pt"):
        discover({"path": str(tmp_path / "ckpt_*.pt")})
    hf = _touch_ckpt(tmp_path / "step10")
    with pytest.raises(DiscoveryError, match="one Hugging Face checkpoint folder"):
        discover({"path": str(hf)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert discover({"path": str(tmp_path)}) == {10: hf}
