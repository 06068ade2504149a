"""What the extraction's allocator setting (ckptlens.extract.allocator) changes, side by side in one
run: forward and backward batches of a GPT-NeoX at a Pythia model's shape (random init, the
pythia_hf targets requiring grad, eager attention as extraction builds it), in a fresh process with
and without ``keep_freed_memory()``, alternating.

    .venv/bin/python bench/bench_allocator.py [--size 160m] [--batches 6] [--repeats 2]

Printed per side: seconds a batch, system CPU seconds a batch, minor page faults a batch and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SHAPES = {"70m": (512, 6, 8, 2048), "160m": (768, 12, 12, 3072), "410m": (1024, 24, 16, 4096)}
ONE_SIDE = """
import json, resource, sys, time
keep, size, n = sys.argv[1] == "keep", sys.argv[2], int(sys.argv[3])
from ckptlens.extract.allocator import keep_freed_memory
if keep:
    assert keep_freed_memory()
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
hidden, layers, heads, mlp = json.loads(sys.argv[4])
torch.manual_seed(0)
cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=mlp, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False)
model = GPTNeoXForCausalLM._from_config(cfg, attn_implementation="eager").eval()
for p in model.parameters():
    p.requires_grad_(False)
for name, m in model.named_modules():
    if name.endswith(("attention.query_key_value", "attention.dense", "mlp.dense_4h_to_h")):
        m.weight.requires_grad_(True)
ids = torch.randint(0, 50304, (8, 128), generator=torch.Generator().manual_seed(0))

def batch():
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()

batch()  # warm: the first batch maps and faults in either way
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(n):
    batch()
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(json.dumps({"s": (t1 - t0) / n, "sys": (r1.ru_stime - r0.ru_stime) / n,
                  "faults": (r1.ru_minflt - r0.ru_minflt) / n, "rss_mb": r1.ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="160m", choices=sorted(SHAPES))
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    got = {"default": [], "keep": []}
    for _ in range(args.repeats):  # alternating: the machine's drift hits both alike
        for mode in got:
            cmd = [sys.executable, "-c", ONE_SIDE, mode, args.size, str(args.batches), json.dumps(SHAPES[args.size])]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got[mode].append(json.loads(out.strip().splitlines()[-1]))
    print(f"Pythia-{args.size} shape, probe 8 x 128, {args.batches} batches after a warm one, {args.repeats} runs")
    for mode, runs in got.items():
        print(f"  {mode:8s} " + "   ".join(
            f"{r['s']:.3f} s a batch, sys {r['sys']:.2f} s, {r['faults']:,.0f} faults, peak {r['rss_mb']:,.0f} MB"
            for r in runs))  # fmt: skip
    ratios = [k["s"] / d["s"] for k, d in zip(got["keep"], got["default"])]
    print("  time a batch, kept / default: " + ", ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
