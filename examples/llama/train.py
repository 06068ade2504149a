"""A Llama-family checkpoint series with real learning, made offline: a small Llama with
grouped-query attention (8 query heads sharing 2 key/value heads) trained by the transformers
Trainer to copy (a random segment of 8 tokens out of 16, repeated three times), saving ``checkpoint-N`` folders as any
Trainer run does — the series examples/llama_gqa.yaml studies.

    .venv/bin/python examples/llama/train.py --out data/llama_gqa [--steps 300 --save-every 20]

Writes ``OUT/checkpoint-N/`` (weights, config.json, optimizer state, trainer_state.json with the
loss) and ``OUT/probe_tokens.npy`` (256 sequences of the task: the probe of the study). The loss
falls from ln 16 towards a third of it (the first segment stays unpredictable) as an attention
head learns to copy from 8 positions back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def train(out: Path, steps: int = 300, save_every: int = 20, seed: int = 0) -> Path:
    import torch
    import transformers

    def sequences(n: int, generator) -> torch.Tensor:
        """A random segment of 8 tokens, repeated three times: after the first 8, each token is
        the one 8 positions back (a copy an attention head learns to make)."""
        return torch.randint(0, 16, (n, 8), generator=generator).repeat(1, 3)

    class TaskSequences(torch.utils.data.Dataset):
        """Fresh sequences of the task, the same ones for a given seed (a fixed generator per item)."""

        def __len__(self):
            return steps * 32

        def __getitem__(self, i):
            x = sequences(1, torch.Generator().manual_seed(seed * 1_000_003 + i))[0]
            return {"input_ids": x, "labels": x.clone()}

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        save_steps=save_every,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        warmup_steps=20,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
    )
    transformers.Trainer(model=transformers.LlamaForCausalLM(config), args=args, train_dataset=TaskSequences()).train()
    probe = sequences(256, torch.Generator().manual_seed(12345)).numpy().astype(np.int64)
    np.save(out / "probe_tokens.npy", probe)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/llama_gqa"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--save-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    train(a.out, a.steps, a.save_every, a.seed)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
