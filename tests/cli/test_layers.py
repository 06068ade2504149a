"""`ckptlens layers` (ckptlens.cli.layers): what a checkpoint holds, step detection."""

from __future__ import annotations

import json
import pickle

import numpy as np
from safetensors.numpy import save_file

from tests.cli.helpers import FF, NEOX_CONFIG, D, H, V, _Trap, neox_state, run_cli, trainer_run


# --------------------------------------------------------------------------- layers
def test_layers_of_a_trainer_folder_of_checkpoints(tmp_path):
    marker = tmp_path / "UNPICKLED"
    out = trainer_run(tmp_path / "out", marker=marker)
    (out / "runs").mkdir()  # TensorBoard logs
    (out / "checkpoint-99").mkdir()  # an interrupted save: no weights
    (out / "checkpoint-99" / "optimizer.pt").write_bytes(pickle.dumps(_Trap(marker)))
    save_file(neox_state(0), str(out / "model.safetensors"))  # the final save_model(): no step in its name
    (out / "training_args.bin").write_bytes(pickle.dumps(_Trap(marker)))
    proc = run_cli("layers", out)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "series: 3 checkpoints in folder" in text and "steps: 5, 10, 40" in text
    assert "read as: Hugging Face folder (model.safetensors + config.json): header only" in text
    assert "skipped: model.safetensors: no step number in the name" in text
    assert "skipped: checkpoint-99: a folder without model weights" in text
    assert "skipped: training_args.bin: training state" in text
    assert "architecture: gpt_neox, 4 heads" in text
    assert "gpt_neox.layers.0.attention.query_key_value  [48, 16]" in text
    assert (
        "gpt_neox.layers.1.attention.head{h}.{q,k,v,o,qk,ov}  h = 0..3: q [4, 16], k [4, 16], v [4, 16], o [16, 4]"
        in text
    )
    assert "* weights     per-head OV circuits W_O·W_V (8): gpt_neox.layers.*.attention.head*.ov" in text
    assert "* activations block outputs (the residual stream after each block) (2): gpt_neox.layers.*" in text
    assert "modules activations can be captured on" in text and "gpt_neox.layers.0.mlp" in text
    assert proc.stderr.strip().endswith("NO_TORCH")  # safetensors: headers only, torch never imported
    assert not marker.exists()  # no pickle beside the weights was opened

    single = run_cli("layers", out / "checkpoint-10", "--json")
    assert single.returncode == 0, single.stderr
    d = json.loads(single.stdout)
    assert d["architecture"] == "gpt_neox" and d["n_heads"] == H and "series" not in d
    mats = {m["name"]: m["shape"] for m in d["weight_matrices"]}
    assert mats["gpt_neox.layers.0.mlp.dense_4h_to_h"] == [D, FF] and mats["embed"] == [V, D]
    assert d["attention"][0]["pieces"] == {
        "q": [4, D],
        "k": [4, D],
        "v": [4, D],
        "o": [D, 4],
        "qk": [D, D],
        "ov": [D, D],
    }
    assert d["default_targets"]["weights"][0] == "gpt_neox.layers.*.attention.dense"
    assert "gpt_neox.layers.1.mlp.dense_4h_to_h" in d["gradient_modules"]
    assert not marker.exists()


def test_layers_of_a_file_a_sharded_folder_and_its_index(tmp_path):
    sd = neox_state(1)
    save_file(sd, str(tmp_path / "ckpt_100.safetensors"))
    shards = tmp_path / "sharded"
    shards.mkdir()
    keys = sorted(sd)
    parts = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, ks in parts.items():
        save_file({k: sd[k] for k in ks}, str(shards / name))
    (shards / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: n for n, ks in parts.items() for k in ks}})
    )
    (shards / "config.json").write_text(json.dumps(NEOX_CONFIG))
    for path in (tmp_path / "ckpt_100.safetensors", shards, shards / "model.safetensors.index.json"):
        proc = run_cli("layers", path, "--json")
        assert proc.returncode == 0, proc.stderr
        d = json.loads(proc.stdout)
        assert len(d["weight_matrices"]) == 10 and proc.stderr.strip().endswith("NO_TORCH")
    assert "2 safetensors shards (model.safetensors.index.json) + config.json" in d["read"]
    assert d["n_heads"] == H  # from the folder's config.json
    file_only = json.loads(run_cli("layers", tmp_path / "ckpt_100.safetensors", "--json").stdout)
    assert file_only["n_heads"] is None and file_only["attention"] == []  # no config: no heads, said so
    assert any("number of attention heads unknown" in n for n in file_only["notes"])


def test_step_detection_of_every_layout(tmp_path):
    """Trainer checkpoint-N, Lightning epoch=E-step=N(.-vK).ckpt, step_N.pt, ckpt_N.safetensors and
    shard folders; names without a step are reported, not guessed."""
    import torch

    from ckptlens.sources.local import scan

    small = {"layer.weight": np.ones((3, 2), np.float32)}
    lightning = tmp_path / "lightning"
    lightning.mkdir()
    torch.save(
        {"state_dict": {k: torch.from_numpy(v) for k, v in small.items()}, "epoch": 2},
        lightning / "epoch=2-step=300.ckpt",
    )
    torch.save(
        {"state_dict": {k: torch.from_numpy(v) for k, v in small.items()}}, lightning / "epoch=3-step=400-v1.ckpt"
    )
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in small.items()}}, lightning / "last.ckpt")
    d = scan(lightning)
    assert list(d.found) == [300, 400]
    assert d.skipped == [("last.ckpt", "no step number in the name (rename it, or set step_pattern)")]

    plain = tmp_path / "plain"
    plain.mkdir()
    for s in (10, 20):
        torch.save(small, plain / f"step_{s}.pt")
        save_file(small, str(plain / f"ckpt_{s + 1}.safetensors"))
    assert list(scan(plain).found) == [10, 11, 20, 21]

    shards = tmp_path / "shards"
    for s in (5, 15):
        f = shards / f"step-{s}"
        f.mkdir(parents=True)
        save_file(small, str(f / "model-00001-of-00001.safetensors"))
        (f / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"layer.weight": "model-00001-of-00001.safetensors"}})
        )
    assert scan(shards).found == {5: shards / "step-5", 15: shards / "step-15"}

    trainer = trainer_run(tmp_path / "trainer", steps=(2, 4))
    assert list(scan(trainer).found) == [2, 4]

    proc = run_cli("layers", lightning)  # pickles: read through open_checkpoint, weights_only
    assert proc.returncode == 0, proc.stderr
    assert "steps: 300, 400" in proc.stdout and "skipped: last.ckpt: no step number" in proc.stdout
    assert "torch state dict: torch.load(weights_only=True)" in proc.stdout


def test_a_code_carrying_checkpoint_is_refused_in_one_line(tmp_path):
    import torch

    marker = tmp_path / "RAN"
    torch.save({"w": torch.ones(2), "trap": _Trap(marker)}, tmp_path / "ckpt_1.pt")
    proc = run_cli("layers", tmp_path / "ckpt_1.pt")
    assert proc.returncode == 2 and not marker.exists()
    err = [ln for ln in proc.stderr.splitlines() if ln != "TORCH_IMPORTED"]
    assert len(err) == 1 and err[0].startswith("ckptlens: error: ") and "refused" in err[0] and "ckpt_1.pt" in err[0]


def test_layers_of_a_grouped_attention_model_name_the_shared_key_value_heads(tmp_path):
    """A Llama with 4 query heads over 2 key/value heads: the listing names the per-query-head
    pieces and each shared key/value map once, as the adapter does."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    out = json.loads(run_cli("layers", str(tmp_path / "llama"), "--json").stdout)
    (attn,) = out["attention"]
    assert attn["module"] == "model.layers.0.self_attn" and attn["n_heads"] == 4 and attn["n_kv_heads"] == 2
    assert attn["names"].startswith("model.layers.0.self_attn.head{h}.{q,o,qk,ov} and model.layers.0.self_attn.kv{j}")
    assert "h // 2" in attn["names"]
