"""examples/vit_digits.yaml on a shortened fine-tune made by its own script
(examples/vit_digits/finetune.py: a ViT pretrained on digits 0-4, fine-tuned on all ten under two
seeds as Trainer checkpoints): the vit adapter's per-head OV circuits and [tokens, d] position
embeddings, an image probe's class-token CKA and linearity, the classifier's gradients, the
Trainer's own loss and the task-vector study across the seeds, through the real workflow."""

from __future__ import annotations

import importlib.util
import re

import pandas as pd
import yaml
from workflow_helpers import REPO, copy_project, snakemake


def test_the_vit_digits_example_runs_through_the_workflow(tmp_path):
    spec = importlib.util.spec_from_file_location("vit_finetune", REPO / "examples" / "vit_digits" / "finetune.py")
    finetune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(finetune)
    project = copy_project(tmp_path / "p")
    data = project / "data" / "vit_digits"
    argv = ["--out", str(data), "--seeds", "0", "1", "--pretrain-steps", "60", "--steps", "30", "--save-every", "15"]
    assert finetune.main([*argv, "--threads", "2"]) == 0
    cfg = yaml.safe_load((REPO / "examples" / "vit_digits.yaml").read_text())
    del cfg["runs"]["vit_seed2"]
    cfg["task_vectors"]["vit_seeds"]["runs"] = ["vit_seed0", "vit_seed1"]
    cfg["task_vectors"]["vit_seeds"]["sample"]["n_samples"] = 2
    (project / "study.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(project, "--cores", "2", "--configfile", "study.yaml")

    for seed in (0, 1):
        run = project / f"results/runs/vit_seed{seed}"
        table = pd.read_parquet(run / "metrics.parquet")
        assert sorted(table["step"].unique()) == [0, 15, 30]
        cka = table.query("metric == 'cka_to_final'")
        assert set(cka["layer"]) == {f"vit.encoder.layer.{i}" for i in range(3)}
        assert cka.query("step == 30")["value"].sub(1).abs().max() < 1e-9
        assert cka["value"].notna().all()
        lin = table.query("metric == 'linearity_score'")
        assert len(lin) == 2 * 3 and lin["value"].between(0, 1).all()
        heads = {l for l in table["layer"] if re.fullmatch(r"vit\.encoder\.layer\.\d\.attention\.head\d\.ov", l)}
        assert len(heads) == 3 * 4
        pos = table.query("metric == 'stable_rank' and layer == 'vit.embeddings.position_embeddings'")["value"]
        assert len(pos) == 3 and (pos > 1.2).all()  # a [17, 64] matrix, not one flattened row
        grads = table.query("metric == 'gradient_norm' and layer == 'classifier'")["value"]
        assert len(grads) == 3 and (grads > 0).all()
        log = pd.read_csv(run / "train_log.csv")
        assert "loss" in log.columns and log["loss"].notna().sum() >= 2  # the Trainer's own log
    tv = pd.read_csv(project / "results/task_vectors/vit_seeds/task_vectors.csv")
    assert "vit.encoder.layer.0.attention.attention.query" in set(tv["layer"])
    assert (project / "results/task_vectors/vit_seeds/samples/sample1.safetensors").stat().st_size > 0
    assert "no data" not in (project / "results/task_vectors/vit_seeds/logs/plot_task_vectors.log").read_text()
