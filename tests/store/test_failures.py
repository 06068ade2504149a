"""Failure records passed on (ckptlens.store.failures): through extraction, references become NaN,
a later job's error names the source file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ckptlens import metrics as M
from ckptlens.store.failures import checkpoint_record, pass_on, write_checkpoint_record
from ckptlens.store.records import make_record
from ckptlens.store.tidy import table_record
from tests.helpers import _tiny_checkpoint


def test_records_pass_through_extraction_and_references_become_nan(tmp_path):
    rec = make_record("/d/ckpt_60.safetensors", "not a valid safetensors file", 60)
    write_checkpoint_record(tmp_path / "ckpt.safetensors", rec)
    outs = [tmp_path / "acts.safetensors", tmp_path / "grads.safetensors", tmp_path / "digest.txt"]
    assert pass_on([tmp_path / "ckpt.safetensors"], outs) == rec
    assert checkpoint_record(outs[0]) == rec == checkpoint_record(outs[1]) and table_record(outs[2]) == rec
    real = _tiny_checkpoint(tmp_path / "real.safetensors")
    assert pass_on([real], [tmp_path / "never.safetensors"]) is None and not (tmp_path / "never.safetensors").exists()

    # a metric job whose final reference failed: NaN for what compares with it, one warning
    x = np.random.default_rng(0).standard_normal((12, 4))
    with pytest.warns(RuntimeWarning, match=r"run 'r', step 20: the final reference is unavailable \(step 60 failed"):
        rows = M.compute_family(
            "activation_similarity",
            {"svcca_to_final": {}, "cka_to_previous": {}},
            {"l0": x, "l1": x},
            {
                "final": M.Unavailable("step 60 failed: /d/ckpt_60.safetensors: not valid"),
                "previous": {"l0": x, "l1": x},
            },
            run="r",
            step=20,
        )
    got = {(r["layer"], r["metric"]): r["value"] for r in rows}
    assert math.isnan(got[("l0", "svcca_to_final")]) and math.isnan(got[("l1", "svcca_to_final")])
    assert got[("l0", "cka_to_previous")] == pytest.approx(1.0)


def test_a_later_job_error_names_the_source_file(tmp_path):
    from ckptlens.sources.importer import import_checkpoint
    from ckptlens.store.failures import naming_source

    src = _tiny_checkpoint(tmp_path / "ckpt_7.safetensors")
    copy = tmp_path / "results" / "step7.safetensors"
    import_checkpoint(src, copy)
    with pytest.raises(KeyError) as err:
        with naming_source(copy):
            raise KeyError("blocks.0.attn.q_proj.weight")
    assert f"while reading the checkpoint {copy}, imported from {src}" in err.value.__notes__
