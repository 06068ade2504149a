"""What a change reruns, as Snakemake's own dry run decides it after a full run: every file a job
reads is its input, every module it runs is in its code param (README, "When does ckptlens
recompute?").

The series: a tiny GPT-NeoX saved as Trainer ``checkpoint-N`` folders (weights, config.json and
an optimizer file beside them), one checkpoint per job, a text probe with its tokenizer."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import yaml
from workflow_helpers import DOWNSTREAM, copy_project, scheduled_jobs, snakemake

STEPS = (10, 20, 30)
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "fast", "slow", "red"]


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(str(folder))


@pytest.fixture(scope="module")
def trainer_project(tmp_path_factory):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    root = tmp_path_factory.mktemp("trainer_series")
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=len(WORDS) + 2,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )
    for step in STEPS:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        folder = root / "run" / f"checkpoint-{step}"
        model.save_pretrained(folder)
        (folder / "optimizer.pt").write_bytes(b"optimizer state, not read")
    _tokenizer(root / "tokenizer")
    rng = np.random.default_rng(0)
    (root / "probe.txt").write_text("\n".join(" ".join(rng.choice(WORDS, 8)) for _ in range(16)) + "\n")

    project = copy_project(root / "project")
    config = {
        "runs": {
            "series": {
                "source": {"type": "local", "path": str(root / "run")},
                "checkpoints_per_job": 1,
                "targets": {
                    "weights": ["gpt_neox.layers.*.attention.dense"],
                    "activations": ["gpt_neox.layers.*"],
                    "gradients": ["gpt_neox.layers.*.attention.dense"],
                },
                "probe": {
                    "text": str(root / "probe.txt"),
                    "tokenizer": str(root / "tokenizer"),
                    "seq_len": 8,
                    "batch_size": 8,
                    "n_batches": 2,
                    "seed": 0,
                },
            }
        },
        "metrics": {"frobenius_norm": {}, "cka_to_final": {}, "gradient_norm": {}},
    }
    (project / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(project, "--cores", "2")
    return root, project


@contextlib.contextmanager
def replaced(path, content: bytes):
    """``path`` holds ``content`` (a new modification time, as any editor leaves it) for the block,
    then its old bytes and times again."""
    old, times = path.read_bytes(), os.stat(path)
    path.write_bytes(content)
    try:
        yield
    finally:
        path.write_bytes(old)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def rules(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


def test_nothing_runs_when_nothing_changed(trainer_project):
    assert scheduled_jobs(trainer_project[1]) == []


def test_probe_text_edited_in_place_extracts_again(trainer_project):
    root, project = trainer_project
    text = (root / "probe.txt").read_bytes()
    with replaced(root / "probe.txt", text.replace(b"cat", b"dog")):
        jobs = scheduled_jobs(project)
    assert rules(jobs)["extract_model_series"] == len(STEPS)  # every chunk: the probe is theirs
    assert rules(jobs)["extract_similarity_series"] == len(STEPS)
    families = {wc["family"] for rule, wc in jobs if rule == "metric_family"}
    assert families == {"similarity_to_final", "gradient"}  # not the weight metrics
    assert set(rules(jobs)) == {"extract_model_series", "extract_similarity_series", "metric_family"} | DOWNSTREAM


def test_a_tokenizer_file_edited_extracts_again(trainer_project):
    root, project = trainer_project
    vocab_file = root / "tokenizer" / "tokenizer.json"
    with replaced(vocab_file, vocab_file.read_bytes().replace(b'"mat"', b'"hat"')):
        jobs = scheduled_jobs(project)
    assert rules(jobs)["extract_model_series"] == len(STEPS) == rules(jobs)["extract_similarity_series"]
    assert "materialise_checkpoints" not in rules(jobs)
    assert {wc["family"] for rule, wc in jobs if rule == "metric_family"} == {"similarity_to_final", "gradient"}


def test_a_weight_file_replaced_inside_a_checkpoint_folder_imports_that_chunk(trainer_project):
    """The folder's own time does not change when a file in it is rewritten: each weight file is
    an input. Cut in half, the checkpoint is imported again (and fails); repaired, again."""
    root, project = trainer_project
    weights = root / "run" / "checkpoint-20" / "model.safetensors"
    good = weights.read_bytes()
    folder_times = os.stat(weights.parent)
    with replaced(weights, good[: len(good) // 2]):
        os.utime(weights.parent, ns=(folder_times.st_atime_ns, folder_times.st_mtime_ns))
        jobs = scheduled_jobs(project)
    per_chunk = [(rule, wc) for rule, wc in jobs if "chunk" in wc]
    assert {wc["chunk"] for _, wc in per_chunk} == {"1"}  # checkpoint-20 only
    assert rules(per_chunk) == {"materialise_checkpoints": 1, "extract_model_series": 1, "extract_similarity_series": 1}


def test_files_saved_beside_the_weights_change_nothing(trainer_project):
    root, project = trainer_project
    with replaced(root / "run" / "checkpoint-20" / "optimizer.pt", b"another optimizer state"):
        assert scheduled_jobs(project) == []


def test_the_metric_input_reader_edited_reruns_every_metric_job_and_nothing_before(trainer_project):
    _, project = trainer_project
    code = project / "src" / "ckptlens" / "metrics" / "inputs.py"
    with replaced(code, code.read_bytes() + b"\n# a changed reader\n"):
        jobs = scheduled_jobs(project)
    metric_jobs = {(wc["family"], wc["part"]) for rule, wc in jobs if rule == "metric_family"}
    assert metric_jobs == {("weight_spectrum", "0"), ("similarity_to_final", "0"), ("gradient", "0")}
    assert set(rules(jobs)) == {"metric_family"} | DOWNSTREAM


def test_the_tensor_store_edited_reruns_every_job_reading_or_writing_tensors(trainer_project):
    _, project = trainer_project
    code = project / "src" / "ckptlens" / "store" / "tensors.py"
    with replaced(code, code.read_bytes() + b"\n# a changed tensor store\n"):
        jobs = set(rules(scheduled_jobs(project)))
    assert {"materialise_checkpoints", "extract_model_series", "extract_similarity_series", "metric_family"} <= jobs


def test_an_adapter_edited_does_not_retrain_a_trained_run(small_project):
    """The demo's toy run is trained here; no adapter is in the training job's code."""
    code = small_project / "src" / "ckptlens" / "adapters" / "gpt2.py"
    with replaced(code, code.read_bytes() + b"\n# a changed adapter\n"):
        jobs = rules(scheduled_jobs(small_project))
    assert "train_small" not in jobs
    assert jobs["metric_family"] > 0  # the weight metrics read the checkpoints through the adapters


def test_the_same_results_from_an_installed_package_are_not_rerun(trainer_project, tmp_path):
    """Code params name files relative to the package: the wheel's copy of the same code in
    another folder gives the same hashes (nothing to do)."""
    _, project = trainer_project
    moved = tmp_path / "elsewhere" / "ckptlens"
    shutil.copytree(project / "src" / "ckptlens", moved)
    src = project / "src"
    backup = tmp_path / "src_backup"
    src.rename(backup)
    try:
        src.mkdir()
        os.symlink(moved, src / "ckptlens")
        assert scheduled_jobs(project) == []
    finally:
        shutil.rmtree(src)
        backup.rename(src)
