"""Everything here runs Snakemake or trains a model: each test collected under tests/workflow/ is
marked ``slow`` (left out of ``./run.sh test-fast``), so the fast lane is a folder, not a marker to
remember. The fixtures: toy checkpoints of a user's own training run, and a project copy that has
completed one full run of the shrunk demo config (tests/configs/small.yaml).

The helpers for running the workflow (``snakemake``, ``copy_project``, ``scheduled_jobs``, ...) are
in tests/workflow_helpers.py, importable as ``workflow_helpers`` (pyproject's pytest pythonpath)."""

import shutil
from pathlib import Path

import pytest
from workflow_helpers import REPO, copy_project, snakemake

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def local_checkpoints(tmp_path_factory) -> Path:
    """Toy checkpoints in a plain folder (steps 0, 20, 40; step 60 is kept aside for the
    'one more checkpoint' test), as a user's own training run would leave them."""
    from ckptlens.sources.trained.induction import InductionTaskConfig
    from ckptlens.sources.trained.train import train_induction
    from ckptlens.sources.trained.transformer import ToyModelConfig

    root = tmp_path_factory.mktemp("local")
    train_induction(
        ToyModelConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2),
        InductionTaskConfig(vocab_size=16, seq_len=16, min_segment=2, max_segment=6, ood_segment=8),
        total_steps=60,
        save_steps=[0, 20, 40, 60],
        batch_size=16,
        lr=3e-3,
        checkpoint_path=lambda s: root / "ckpts" / f"ckpt_{s}.safetensors",
        log_path=root / "log.csv",
    )
    (root / "spare").mkdir()
    shutil.move(root / "ckpts" / "ckpt_60.safetensors", root / "spare" / "ckpt_60.safetensors")
    return root


@pytest.fixture(scope="session")
def small_project(tmp_path_factory, local_checkpoints) -> Path:
    """A project copy that has completed one full run of the shrunken config."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    cfg = (REPO / "tests" / "configs" / "small.yaml").read_text()
    (project / "config/config.yaml").write_text(cfg.replace("LOCAL_DIR", str(local_checkpoints / "ckpts")))
    snakemake(project, "--cores", "2")
    return project
