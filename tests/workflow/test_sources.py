"""Real checkpoints in, through the real workflow: an imported metrics table (the published Pythia
study) and a real pretrained model (all-MiniLM-L6-v2) fine-tuned under two seeds."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, copy_project, finetune_minilm, snakemake, step_file

PYTHIA = REPO.parent / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"


@pytest.mark.skipif(not PYTHIA.exists(), reason=f"the shared Pythia data is not at {PYTHIA}")
def test_pythia_table_example(tmp_path):
    project = copy_project(tmp_path / "p")
    cfg = yaml.safe_load((REPO / "examples/pythia_table.yaml").read_text())
    for run in cfg["runs"].values():
        run["source"]["path"] = str(PYTHIA)
    (project / "pythia.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(project, "--cores", "2", "--configfile", "pythia.yaml")

    raw = pd.read_csv(PYTHIA)
    # the study's selection (runs named after the models) and the broader one beside it
    selections = {"": r"attention\.dense", ".attn_mlp": r"(attention\.dense|mlp\.dense_4h_to_h)"}
    assert len(cfg["runs"]) == 10
    for run in cfg["runs"]:
        model, suffix = (run[: -len(".attn_mlp")], ".attn_mlp") if run.endswith(".attn_mlp") else (run, "")
        got = pd.read_parquet(project / f"results/runs/{run}/metrics.parquet")
        want = raw[(raw["model"] == model) & raw["layer"].str.match(rf"gpt_neox\.layers\.\d+\.{selections[suffix]}$")]
        assert len(got) == len(want) > 0
        merged = got.merge(want, on=["layer", "metric", "step"], suffixes=("", "_csv"))
        assert len(merged) == len(want) and np.allclose(merged["value"], merged["value_csv"])
        for png in ["pca.png", "correlation.png", "trajectories/trajectory_cka_scores.png"]:
            assert (project / f"results/runs/{run}/plots/{png}").stat().st_size > 0
    # the study's correlation for one layer, recomputed plainly from the CSV
    model, layer = "pythia-410m-deduped", "gpt_neox.layers.5.attention.dense"  # noqa: F841 (read by the query)
    wide = raw.query("model == @model and layer == @layer").pivot(index="step", columns="metric", values="value")
    corr = pd.read_csv(project / f"results/runs/{model}/analysis/correlation.csv")
    r = corr.query("layer == @layer and x_metric == 'cka_scores' and y_metric == 'grad_sim'")["pearson_r"].item()
    assert r == pytest.approx(np.corrcoef(wide["cka_scores"], wide["grad_sim"])[0, 1], abs=1e-9)
    assert not (project / "results/runs/demo").exists()  # the example does not drag the demo in
    for figure in ("pythia_model_size", "pythia_model_size_attn_mlp"):
        assert (project / f"results/figures/{figure}.png").stat().st_size > 0


@pytest.fixture(scope="module")
def minilm_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    finetune_minilm(root, (0, 1), steps=20, save_every=10, head_seed=0)
    return root


def test_minilm_finetuning_through_the_workflow(tmp_path, minilm_checkpoints):
    from safetensors.numpy import load_file

    project = copy_project(tmp_path / "p")
    text = (REPO / "examples/minilm.yaml").read_text().replace("data/minilm", str(minilm_checkpoints))
    cfg = yaml.safe_load(text)
    del cfg["runs"]["minilm_seed2"]
    cfg["task_vectors"]["minilm_seeds"]["runs"] = ["minilm_seed0", "minilm_seed1"]
    (project / "minilm.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(project, "--cores", "2", "--configfile", "minilm.yaml")

    t = pd.read_parquet(project / "results/runs/minilm_seed1/metrics.parquet")
    assert sorted(t["step"].unique()) == [0, 10, 20]
    assert t["value"].notna().all()
    # a weight metric against the Hugging Face checkpoint's own tensor
    w = load_file(minilm_checkpoints / "seed1/step20/model.safetensors")[
        "bert.encoder.layer.3.attention.self.query.weight"
    ]
    got = t.query("step == 20 and layer == 'bert.encoder.layer.3.attention.self.query' and metric == 'frobenius_norm'")
    assert got["value"].item() == pytest.approx(np.linalg.norm(w.astype(np.float64)), rel=1e-5)
    # per-head OV circuits of the BERT adapter (12 heads x 6 layers)
    heads = {l for l in t["layer"] if re.search(r"head\d+\.ov$", l)}
    assert len(heads) == 72
    assert np.allclose(t.query("step == 20 and metric == 'cka_to_final'")["value"], 1.0)
    assert (t.query("metric == 'update_norm_initial' and step == 0")["value"] == 0).all()
    assert t.query("metric == 'update_norm_initial' and step == 20")["value"].gt(0).all()
    tv = pd.read_csv(project / "results/task_vectors/minilm_seeds/task_vectors.csv")
    # two runs: the first component explains everything (a centred 2-point cloud is a line)
    assert np.allclose(tv[tv["metric"] == "task_vector_pca_evr.pc1"]["value"], 1.0)
    assert (project / "results/runs/minilm_seed0/identical_steps.csv").exists()


NEW_METRICS = {  # issue: the catalogue of the field's tools (weights, activations, gradients, attention)
    "alpha": {}, "alpha_xmin": {}, "alpha_ks_distance": {}, "alpha_weighted": {}, "log_spectral_norm": {},
    "mp_softrank": {}, "num_spikes": {}, "condition_number": {}, "nuclear_norm": {}, "gini": {}, "hoyer": {},
    "cka_to_final": {"debiased": True}, "svcca_to_final": {}, "pwcca_to_final": {}, "mutual_knn_to_final": {},
    "rankme": {}, "alpha_req": {}, "anisotropy": {}, "anisotropy_microscope": {}, "intrinsic_dimension": {},
    "dormant_fraction": {}, "gradient_snr": {}, "attention_entropy": {},
}  # fmt: skip


def test_the_field_metrics_on_minilm_through_the_workflow(tmp_path, minilm_checkpoints):
    """Every metric added from the peers' catalogues, on the real MiniLM fine-tuning, through the
    workflow: a value per layer and step, and a few of them against the checkpoint or extraction
    written out plainly."""
    from safetensors.numpy import load_file

    project = copy_project(tmp_path / "p")
    mods = ["bert.encoder.layer.*.attention.self.query", "bert.encoder.layer.*.output.dense"]
    run = {
        "source": {"type": "local", "path": str(minilm_checkpoints / "seed0")},
        "targets": {
            "weights": mods,
            "activations": ["bert.encoder.layer.*"],
            "gradients": mods[:1],
            "attentions": ["bert.encoder.layer.*.attention"],
        },
        "probe": {
            "text": str(minilm_checkpoints / "probe.txt"),
            "tokenizer": str(minilm_checkpoints / "tokenizer"),
            "seq_len": 32,
            "batch_size": 64,
            "n_batches": 2,
            "seed": 0,
        },
    }
    (project / "new.yaml").write_text(yaml.safe_dump({"runs": {"minilm": run}, "metrics": NEW_METRICS}))
    snakemake(project, "--cores", "2", "--configfile", "new.yaml")
    t = pd.read_parquet(project / "results/runs/minilm/metrics.parquet")
    assert {m.partition(".")[0] for m in t["metric"]} == set(NEW_METRICS)
    assert sorted(t["step"].unique()) == [0, 10, 20]
    finite = t[t["value"].notna()]
    assert {m.partition(".")[0] for m in finite["metric"]} == set(NEW_METRICS)  # every metric is defined here
    w = load_file(minilm_checkpoints / "seed0/step20/model.safetensors")["bert.encoder.layer.2.output.dense.weight"]
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    one = t.query("step == 20 and layer == 'bert.encoder.layer.2.output.dense'").set_index("metric")["value"]
    assert one["nuclear_norm"] == pytest.approx(s.sum(), rel=1e-9)
    assert one["log_spectral_norm"] == pytest.approx(np.log10(s[0] ** 2), rel=1e-9)
    x = load_file(step_file(project, "minilm", "extract/activations", 10))["bert.encoder.layer.4"].astype(np.float64)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    n = len(u)
    want = (cos.sum() - np.trace(cos)) / (n * (n - 1))  # mean cosine of distinct token pairs
    got = t.query("step == 10 and layer == 'bert.encoder.layer.4' and metric == 'anisotropy'")["value"].item()
    assert got == pytest.approx(want, rel=1e-9)
    heads = t[t["metric"].str.startswith("attention_entropy.head")]["metric"].unique()
    assert len(heads) == 12  # MiniLM's 12 heads
    ent = t[t["metric"] == "attention_entropy.mean"]["value"]
    assert (ent > 0).all() and (ent < np.log(32)).all()


FAKE_HUB_SITECUSTOMIZE = """
# Test-only: serve huggingface_hub.snapshot_download from a local folder (no network here).
import os, shutil
_hub = os.environ.get("CKPTLENS_FAKE_HUB")
if _hub:
    import huggingface_hub

    def _fake_snapshot_download(repo_id, revision=None, local_dir=None, **_):
        src = os.path.join(_hub, repo_id.replace("/", "--"), revision)
        if not os.path.isdir(src):
            raise FileNotFoundError(f"fake hub: no revision {revision} of {repo_id}")
        shutil.copytree(src, local_dir, dirs_exist_ok=True)
        return local_dir

    huggingface_hub.snapshot_download = _fake_snapshot_download
"""


def test_huggingface_revisions_through_the_workflow(tmp_path, monkeypatch):
    """One revision per job, converted, download removed, checkpoint deleted once extracted
    (temp), identical steps reported, and nothing reruns afterwards although the checkpoints are gone."""
    transformers = pytest.importorskip("transformers")
    import torch

    hub = tmp_path / "hub" / "tiny--neox"
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(
            hidden_size=32,
            num_attention_heads=4,
            num_hidden_layers=2,
            intermediate_size=64,
            vocab_size=50,
            max_position_embeddings=64,
        )
    )
    for rev in ("step0", "step1", "step8"):
        if rev == "step8":  # training moved the weights; step1 serves step0's weights unchanged
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
        model.save_pretrained(hub / rev)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(FAKE_HUB_SITECUSTOMIZE)
    np.save(tmp_path / "tokens.npy", np.random.default_rng(0).integers(0, 50, size=(16, 12)))

    project = copy_project(tmp_path / "p")
    cfg = {
        "runs": {
            "neox": {
                "source": {"type": "huggingface", "model": "tiny/neox", "revisions": ["step0", "step1", "step8"]},
                "targets": {
                    "weights": ["gpt_neox.layers.*.attention.query_key_value", "gpt_neox.layers.*.attention.head*.ov"],
                    "activations": ["gpt_neox.layers.*"],
                    "gradients": ["gpt_neox.layers.*.attention.dense"],
                },
                "probe": {"tokens": str(tmp_path / "tokens.npy"), "batch_size": 8, "n_batches": 2, "seed": 0},
            }
        },
        "metrics": {"frobenius_norm": {}, "cka_to_final": {}, "gradient_norm": {}},
    }
    (project / "hf.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("CKPTLENS_FAKE_HUB", str(tmp_path / "hub"))
    site = str(tmp_path / "site")  # after the project's src on PYTHONPATH: the fake hub's sitecustomize
    _with_site(project, site, "--cores", "2", "--configfile", "hf.yaml")

    r = project / "results/runs/neox"
    t = pd.read_parquet(r / "metrics.parquet")
    assert sorted(t["step"].unique()) == [0, 1, 8]
    assert np.allclose(t.query("step == 8 and metric == 'cka_to_final'")["value"], 1.0)
    w8 = load_safetensors(hub / "step8" / "model.safetensors")["gpt_neox.layers.1.attention.query_key_value.weight"]
    got = t.query("step == 8 and layer == 'gpt_neox.layers.1.attention.query_key_value' and metric == 'frobenius_norm'")
    assert got["value"].item() == pytest.approx(np.linalg.norm(w8.astype(np.float64)), rel=1e-5)
    assert len({l for l in t["layer"] if l.endswith(".ov")}) == 8  # 4 heads x 2 layers
    assert not list((r / "checkpoints").rglob("*.safetensors")), "temp() checkpoints are deleted once extracted"
    assert not (r / "downloads").exists() or not any((r / "downloads").iterdir())
    assert pd.read_csv(r / "identical_steps.csv").values.tolist() == [[1, 0]]
    dry = _with_site(project, site, "-n", "--configfile", "hf.yaml")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def load_safetensors(path):
    from safetensors.numpy import load_file

    return load_file(path)


def _with_site(project, site, *args, check=True):
    import os
    import subprocess

    from workflow_helpers import SNAKEMAKE

    env = {**os.environ, "PYTHONPATH": f"{project / 'src'}:{site}", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([SNAKEMAKE, *args], cwd=project, env=env, capture_output=True, text=True, timeout=3600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def test_the_workflow_finds_local_checkpoints_as_the_library_does(tmp_path):
    """A folder with ckpt_10.pth, ckpt_20.ckpt, ckpt_30.pt and a sub-folder notes_40/: the workflow
    used to take {30: ckpt_30.pt, 40: notes_40} (its own discovery dropped .pth/.ckpt, which the
    readers support, and took any folder with a number in its name); now it uses
    ckptlens.sources.local.discover, whose answer is {10, 20, 30}, and runs them all."""
    import torch

    from ckptlens.sources.local import discover

    folder = tmp_path / "ckpts"
    folder.mkdir()
    sizes = {}
    for step, name in ((10, "ckpt_10.pth"), (20, "ckpt_20.ckpt"), (30, "ckpt_30.pt")):
        w = torch.full((4, 3), float(step))
        torch.save({"state_dict": {"layer.weight": w, "layer.bias": torch.zeros(4)}}, folder / name)
        sizes[step] = float(np.linalg.norm(w.numpy()))
    (folder / "notes_40").mkdir()
    (folder / "notes_40" / "readme.txt").write_text("not a checkpoint")
    assert list(discover(str(folder))) == [10, 20, 30]
    project = copy_project(tmp_path / "p")
    cfg = {"runs": {"mine": {"source": {"type": "local", "path": str(folder)}}}, "metrics": {"frobenius_norm": {}}}
    (project / "mine.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(project, "--cores", "2", "--configfile", "mine.yaml")
    t = pd.read_parquet(project / "results/runs/mine/metrics.parquet")
    assert sorted(t["step"].unique()) == [10, 20, 30]
    for step, norm in sizes.items():
        assert t.query("step == @step and layer == 'layer'")["value"].item() == pytest.approx(norm)


def _tree_bytes(folder) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def test_local_safetensors_are_read_in_place_pickles_converted(tmp_path):
    """A series of float16 save_pretrained folders (GPT-NeoX shaped) is read where it is: the run's
    checkpoint files are references, the weights extraction keeps float16, and everything written
    under results/ is at most 10 % of the checkpoints' bytes. The same weights as pickled .pt
    files are converted (read safely once, never unpickled again), with the same values."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from ckptlens.sources.readers import files_bytes

    cfg = GPTNeoXConfig(
        vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    folders, pickles = tmp_path / "hf", tmp_path / "pt"
    pickles.mkdir()
    for step in (0, 10, 20):
        torch.manual_seed(step)
        model = GPTNeoXForCausalLM(cfg).to(torch.float16)
        model.save_pretrained(folders / f"step{step}")
        torch.save(model.state_dict(), pickles / f"ckpt_{step}.pt")
    source_bytes = files_bytes(sorted(folders.iterdir()))
    project = copy_project(tmp_path / "p")
    run = {"targets": {"weights": ["gpt_neox.layers.*.attention.dense"]}}
    conf = {
        "runs": {
            "hf": {"source": {"type": "local", "path": str(folders)}, **run},
            "pt": {"source": {"type": "local", "path": str(pickles)}, **run},
        },
        "metrics": {"frobenius_norm": {}, "update_norm_initial": {}},
    }
    (project / "mine.yaml").write_text(yaml.safe_dump(conf))
    snakemake(project, "--cores", "2", "--configfile", "mine.yaml")

    hf, pt = project / "results/runs/hf", project / "results/runs/pt"
    assert _tree_bytes(hf / "checkpoints") < 0.001 * source_bytes  # references, no copy
    assert _tree_bytes(project / "results") - _tree_bytes(pt) <= 0.10 * source_bytes
    assert _tree_bytes(pt / "checkpoints") > 0.9 * source_bytes  # the pickles, converted
    assert not (hf / "extract").exists()  # weight metrics read the checkpoints: nothing extracted
    a = pd.read_parquet(hf / "metrics.parquet").sort_values(["step", "layer", "metric"], ignore_index=True)
    b = pd.read_parquet(pt / "metrics.parquet").sort_values(["step", "layer", "metric"], ignore_index=True)
    assert len(a) == 3 * 4 * 2 and a["value"].notna().all()
    np.testing.assert_array_equal(a["value"], b["value"])
    w = load_safetensors(folders / "step20/model.safetensors")["gpt_neox.layers.3.attention.dense.weight"]
    got = a.query("step == 20 and layer == 'gpt_neox.layers.3.attention.dense' and metric == 'frobenius_norm'")
    assert got["value"].item() == pytest.approx(np.linalg.norm(w.astype(np.float64)), rel=1e-6)
