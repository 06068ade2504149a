"""How good are weights on a task: the evaluation tasks of the task-vector samples
(``task_vectors.<name>.sample.evaluate``)."""

from __future__ import annotations

from ..extract.hf_model import SEQUENCE_CLASSIFICATION, load_hf_model
from ..sources import minilm

#: evaluation task -> what it needs; the only one so far is the MiniLM sentiment task
TASKS = ("minilm_sentiment",)


def evaluate_checkpoint(checkpoint, tokenizer, max_len: int = 32, device=None) -> dict[str, float]:
    """:func:`evaluate` of a checkpoint file that carries its Hugging Face config in its metadata
    (a step folder imported by the workflow, or a task-vector sample written from one), built
    offline with :func:`ckptlens.extract.hf_model.load_hf_model`."""
    model, _, kind = load_hf_model(checkpoint, device=device)
    if kind != SEQUENCE_CLASSIFICATION:
        raise ValueError(f"{checkpoint}: not a sequence classifier (a {kind!r} model); the sentiment task needs one")
    return minilm.evaluate(model, tokenizer, max_len=max_len)


def evaluate_checkpoints(task: str, rows, tokenizer=None, max_len: int = 32) -> list[dict]:
    """``[{kind, name, loss, accuracy}]`` of every ``{kind, name, path}`` in ``rows``, on ``task``."""
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r} (known: {', '.join(TASKS)})")
    tok = minilm.load_task_tokenizer(tokenizer)
    out = []
    for row in rows:
        m = evaluate_checkpoint(row["path"], tok, max_len=max_len)
        out.append({"kind": row["kind"], "name": row["name"], "loss": m["loss"], "accuracy": m["accuracy"]})
        print(f"{row['kind']:9s} {row['name']:24s} loss {m['loss']:.4f} accuracy {m['accuracy']:.4f}")
    return out
