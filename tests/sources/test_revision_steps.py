"""Step numbers from the names that checkpoint series are published under (issue 21): hub revisions
(``ckptlens.sources.hub``) and local folders (``ckptlens.sources.local``) read the same step from
``stage1-step1000-tokens4B`` (OLMo-2), ``step1000-tokens4B`` (OLMo-1), ``step-125000`` and
``stage1-step-40000`` (SmolLM), ``ckpt_000`` (Amber/K2), ``global_step1200`` (BLOOM),
``checkpoint-N`` (Trainer, CRFM GPT-2) and ``step143000`` (Pythia); the revision keeps its full name
(the stage is not lost), and two stages with the same step are refused with a way out."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptlens.sources.hub import RevisionError, revision_step, select_revisions
from ckptlens.sources.local import scan

SCHEMES = {
    "step143000": 143000,
    "stage1-step1000-tokens4B": 1000,
    "stage2-ingredient1-step11000-tokens93B": 11000,
    "step1000-tokens4B": 1000,
    "step-125000": 125000,
    "stage1-step-40000": 40000,
    "ckpt_000": 0,
    "ckpt_359": 359,
    "global_step1200": 1200,
    "checkpoint-2500": 2500,
}


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_hub_revision_names_give_their_step(name):
    assert revision_step(name) == SCHEMES[name]


def test_names_without_a_step_have_none():
    for name in ("main", "tokens4B", "stage1", "v1.0", ""):
        assert revision_step(name) is None


def test_a_revision_list_keeps_the_full_names():
    revs = ["stage1-step1000-tokens4B", "stage1-step0-tokens0B", "stage1-step2000-tokens8B"]
    assert select_revisions({"revisions": revs}) == {
        0: "stage1-step0-tokens0B",
        1000: "stage1-step1000-tokens4B",
        2000: "stage1-step2000-tokens8B",
    }
    assert select_revisions({"revisions": ["ckpt_000", "ckpt_001"]}) == {0: "ckpt_000", 1: "ckpt_001"}


def test_two_stages_with_one_step_are_refused_with_the_mapping_as_the_way_out():
    with pytest.raises(RevisionError, match=r"step 1000 is listed twice.*stage1.*stage2.*mapping"):
        select_revisions({"revisions": ["stage1-step1000-tokens4B", "stage2-ingredient1-step1000-tokens9B"]})
    assert select_revisions(
        {"revisions": {1000: "stage1-step1000-tokens4B", 101000: "stage2-ingredient1-step1000-tokens9B"}}
    ) == {1000: "stage1-step1000-tokens4B", 101000: "stage2-ingredient1-step1000-tokens9B"}
    with pytest.raises(RevisionError, match="no step in its name"):
        select_revisions({"revisions": ["main"]})


def test_local_folders_named_by_the_publishing_schemes(tmp_path):
    names = [n for n in SCHEMES if n not in ("stage1-step1000-tokens4B", "ckpt_359", "stage1-step-40000")]
    for n in names:
        d = tmp_path / n
        d.mkdir()
        save_file({"w.weight": np.ones((2, 2), np.float32)}, str(d / "model.safetensors"))
    found = scan(str(tmp_path)).found
    assert {s: p.name for s, p in found.items()} == {SCHEMES[n]: n for n in names}
