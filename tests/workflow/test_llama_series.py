"""A Llama-family checkpoint series through the real workflow (issue 21): a tiny Llama with
grouped-query attention (4 query heads sharing 2 key/value heads) trained by the transformers
Trainer, its ``checkpoint-N`` folders read as a local source, and a run *without targets*: it gets
the llama adapter's defaults (attention output, per-head OV/QK circuits, MLP output, block outputs,
their gradients), and the per-head OV circuit of query head h is W_O^h·W_V^(h // 2)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import copy_project, snakemake

H, KV, D, L, V = 4, 2, 32, 2, 64


def train_tiny_llama(out: Path) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    class Items(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=D,
        num_hidden_layers=L,
        num_attention_heads=H,
        num_key_value_heads=KV,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    g = torch.Generator().manual_seed(0)
    items = [{"input_ids": (x := torch.randint(3, V, (16,), generator=g)), "labels": x.clone()} for _ in range(32)]
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=6,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    transformers.Trainer(model=transformers.LlamaForCausalLM(cfg), args=args, train_dataset=Items(items)).train()
    return out


def test_a_gqa_llama_trainer_series_through_the_workflow_with_its_default_targets(tmp_path):
    from safetensors.numpy import load_file

    trainer = train_tiny_llama(tmp_path / "trainer")
    assert sorted(p.name for p in trainer.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    np.save(tmp_path / "tokens.npy", np.random.default_rng(0).integers(3, V, size=(16, 12)))
    project = copy_project(tmp_path / "p")
    cfg = {
        "runs": {
            "llama": {
                "source": {"type": "local", "path": str(trainer)},
                "probe": {"tokens": str(tmp_path / "tokens.npy"), "batch_size": 4, "n_batches": 2, "seed": 0},
            }
        },
        "metrics": {"frobenius_norm": {}, "cka_to_final": {}, "gradient_norm": {}},
    }
    (project / "llama.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(project, "--cores", "2", "--configfile", "llama.yaml")

    t = pd.read_parquet(project / "results/runs/llama/metrics.parquet")
    assert sorted(t["step"].unique()) == [2, 4, 6]
    fro = t.query("metric == 'frobenius_norm' and step == 6").set_index("layer")["value"]
    assert {f"model.layers.{i}.self_attn.head{h}.{c}" for i in range(L) for h in range(H) for c in ("ov", "qk")} <= set(
        fro.index
    )
    assert {"model.layers.1.self_attn.o_proj", "model.layers.1.mlp.down_proj"} <= set(fro.index)
    assert not any(".kv" in n for n in fro.index)  # the shared k/v maps are not default targets
    w = load_file(trainer / "checkpoint-6" / "model.safetensors")
    dh = D // H
    wo = w["model.layers.1.self_attn.o_proj.weight"].astype(np.float64)
    wv = w["model.layers.1.self_attn.v_proj.weight"].astype(np.float64)
    for h in range(H):
        ov = wo[:, h * dh : (h + 1) * dh] @ wv[(h // 2) * dh : (h // 2 + 1) * dh]
        assert fro[f"model.layers.1.self_attn.head{h}.ov"] == pytest.approx(np.linalg.norm(ov), rel=1e-5)
    cka = t.query("metric == 'cka_to_final' and step == 6")
    assert sorted(cka["layer"]) == ["model.layers.0", "model.layers.1"] and np.allclose(cka["value"], 1.0)
    grads = set(t.query("metric.str.startswith('gradient_norm')", engine="python")["layer"])
    assert {"model.layers.0.self_attn.o_proj", "model.layers.1.mlp.down_proj"} <= grads
