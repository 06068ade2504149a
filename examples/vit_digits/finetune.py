#!/usr/bin/env python
"""A small ViT pretrained here on half of scikit-learn's 8×8 digits, then fine-tuned on all ten
classes under several seeds from that one base, saved as Hugging Face Trainer checkpoints — real
learning on an image set that ships offline with scikit-learn.

    python examples/vit_digits/finetune.py --out data/vit_digits --seeds 0 1 2

Writes:

- DIR/base/: the pretrained ViT (digits 0-4, ``--pretrain-steps`` of AdamW from a fixed seed) with
  a fresh 10-class head drawn with ``--head-seed`` (save_pretrained + preprocessor_config.json);
- DIR/seed{S}/checkpoint-{N}/: Trainer checkpoints of the fine-tune on the training split (all ten
  classes; seed S orders the examples), one every ``--save-every`` steps, and checkpoint-0 = the
  base, so that every seed starts from one step-0 checkpoint (task vectors);
- DIR/probe/images.npy, labels.npy: the held-out digits (uint8 [n, 32, 32, 3]) and their classes;
- DIR/accuracy.csv: held-out accuracy of the base and of every seed's last checkpoint.

Images are upsampled ×4 (nearest) to 32×32 and repeated to RGB; the model reads 8×8 patches
(16 patches + the class token), hidden size 64, 3 layers, 4 heads.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

IMG, PATCH = 32, 8


def digits_rgb():
    """(images uint8 [n, 32, 32, 3], labels [n]) of sklearn's digits, and the train/probe split."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    img = img.repeat(IMG // 8, axis=1).repeat(IMG // 8, axis=2)
    img = np.repeat(img[..., None], 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(img))
    n_probe = 297
    return img, d.target.astype(np.int64), order[n_probe:], order[:n_probe]


def vit_config(num_labels: int):
    import transformers

    return transformers.ViTConfig(
        image_size=IMG,
        patch_size=PATCH,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
    )


def processor():
    import transformers

    return transformers.ViTImageProcessor(size={"height": IMG, "width": IMG}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def pixels(images):
    import numpy as np
    import torch

    return torch.from_numpy(((images.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())


def accuracy(model, images, labels) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = model(pixel_values=pixels(images)).logits.argmax(-1).numpy()
    return float((pred == labels).mean())


def pretrain(images, labels, steps: int, head_seed: int, seed: int = 1234):
    """The base: a ViT trained on digits 0-4, then a fresh 10-class head."""
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(vit_config(5))
    keep = labels < 5
    x, y = pixels(images[keep]), torch.from_numpy(labels[keep])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), 64, replace=False))
        loss = model(pixel_values=x[idx], labels=y[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    base = transformers.ViTForImageClassification(vit_config(10))
    base.vit.load_state_dict(model.vit.state_dict())
    torch.manual_seed(head_seed)
    base.classifier.reset_parameters()
    return base.eval()


def finetune(base_dir: Path, out: Path, images, labels, seed: int, steps: int, save_every: int, lr: float, batch: int):
    import numpy as np
    import torch
    import transformers

    order = np.random.default_rng(seed).permutation(len(images))  # the seed's own batches

    class Digits(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            j = order[i]
            return {"pixel_values": pixels(images[j : j + 1])[0], "labels": int(labels[j])}

    model = transformers.ViTForImageClassification.from_pretrained(str(base_dir))
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        save_steps=save_every,
        save_strategy="steps",
        logging_steps=save_every,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        lr_scheduler_type="constant",
        seed=seed,
        data_seed=seed,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        save_only_model=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Digits(), processing_class=processor())
    trainer.train()
    step0 = out / "checkpoint-0"  # the base, as every seed's step 0
    transformers.ViTForImageClassification.from_pretrained(str(base_dir)).save_pretrained(step0)
    processor().save_pretrained(step0)
    return trainer.model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--head-seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    images, labels, train, probe = digits_rgb()
    (out / "probe").mkdir(parents=True, exist_ok=True)
    np.save(out / "probe" / "images.npy", images[probe])
    np.save(out / "probe" / "labels.npy", labels[probe])
    t0 = time.time()
    base = pretrain(images[train], labels[train], args.pretrain_steps, args.head_seed)
    base.save_pretrained(out / "base")
    processor().save_pretrained(out / "base")
    rows = [("base", accuracy(base, images[probe], labels[probe]))]
    print(f"base: pretrained on digits 0-4 in {time.time() - t0:.0f}s; 10-class accuracy {rows[0][1]:.3f} (fresh head)")
    for seed in args.seeds:
        t0 = time.time()
        model = finetune(
            out / "base",
            out / f"seed{seed}",
            images[train],
            labels[train],
            seed,
            args.steps,
            args.save_every,
            args.lr,
            args.batch_size,
        )
        rows.append((f"seed{seed}", accuracy(model, images[probe], labels[probe])))
        print(f"seed {seed}: {args.steps} steps in {time.time() - t0:.0f}s; held-out accuracy {rows[-1][1]:.3f}")
    with open(out / "accuracy.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("model", "accuracy"), *rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
