"""Glue between datasets, models and the loop: encoded batches, task losses, dev metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import models, train_data, trainer

METRIC = {
    "sequence-classification": "accuracy",
    "regression": "pearson",
    "token-classification": "accuracy",
    "feature-extraction": "spearman",  # of pair similarities (embedding distillation)
}
LossFn = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, float]]]


def label_kind(task: str) -> str:
    return {"regression": "regression", "token-classification": "token"}.get(task, "class")


def task_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
    """The model's own loss on gold labels (cross-entropy, or MSE for regression)."""
    out = model(**batch)
    return out.loss, {}


def token_limit(path: Path, cfg: Any) -> int:
    """--max-length, capped by the longest input the model takes."""
    return min(cfg.max_length, models.max_length(path, models.read_config(path)))


def batch_maker(
    path: Path, examples: Any, labels: list[Any] | None, task: str, cfg: Any
) -> Callable[[int], list[dict[str, Any]]]:
    """epoch -> that epoch's padded, length-bucketed batches (tokenized once)."""
    pad = models.pad_id(models.read_config(path))
    encoded = train_data.encode(
        path, examples, token_limit(path, cfg), labels, words=task == "token-classification"
    )
    lengths = [len(x) for x in encoded.ids]
    kind = label_kind(task)
    cache: dict[int, list[dict[str, Any]]] = {}

    def batches(epoch: int) -> list[dict[str, Any]]:
        if epoch not in cache:
            cache.clear()
            order = train_data.batch_order(lengths, cfg.batch_size, cfg.seed, epoch)
            cache[epoch] = [train_data.collate(encoded, idx, pad, kind) for idx in order]
        return cache[epoch]

    return batches


def dev_metric(
    path: Path, dev: Any, labels: list[Any], task: str, cfg: Any
) -> Callable[[Any], dict[str, float]]:
    """model -> {metric: value} on the dev set (in order, no shuffling)."""
    import torch

    from edgeslim import metrics

    pad = models.pad_id(models.read_config(path))
    encoded = train_data.encode(
        path, dev, token_limit(path, cfg), labels, words=task == "token-classification"
    )
    order = [list(range(i, min(i + 64, len(encoded)))) for i in range(0, len(encoded), 64)]
    batches = [train_data.collate(encoded, idx, pad, label_kind(task)) for idx in order]

    def evaluate(model: Any) -> dict[str, float]:
        preds, gold = [], []
        with torch.no_grad():
            for batch in batches:
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                if task == "regression":
                    preds.append(logits[:, 0].numpy())
                    gold.append(batch["labels"].numpy())
                elif task == "token-classification":
                    keep = batch["labels"] != -100  # first sub-tokens: word-level accuracy
                    preds.append(logits.argmax(-1)[keep].numpy())
                    gold.append(batch["labels"][keep].numpy())
                else:
                    preds.append(logits.argmax(-1).numpy())
                    gold.append(batch["labels"].numpy())
        p, g = np.concatenate(preds), np.concatenate(gold)
        value = metrics.pearson(g, p) if task == "regression" else metrics.accuracy(g, p)
        return {METRIC[task]: round(float(value), 5)}

    return evaluate


def similarity_metric(
    path: Path, dev: Any, scores: list[float], pooling: str, cfg: Any
) -> Callable[[Any], dict[str, float]]:
    """model -> {"spearman": rho} between the cosine of each pair's pooled embeddings and the
    gold scores (STS-style dev sets)."""
    import torch

    from edgeslim import data, metrics
    from edgeslim.distillation import pool

    pad = models.pad_id(models.read_config(path))
    sides = []
    for texts in (dev.texts, dev.pairs):
        encoded = train_data.encode(path, data.Examples(dev.name, texts), token_limit(path, cfg), None)
        order = [list(range(i, min(i + 64, len(encoded)))) for i in range(0, len(encoded), 64)]
        sides.append([train_data.collate(encoded, idx, pad, "class") for idx in order])

    def evaluate(model: Any) -> dict[str, float]:
        embedded = []
        with torch.no_grad():
            for batches in sides:
                parts = []
                for batch in batches:
                    feeds = {k: v for k, v in batch.items() if k != "labels"}
                    student = getattr(model, "student", model)
                    parts.append(pool(student(**feeds).last_hidden_state, feeds["attention_mask"], pooling))
                embedded.append(torch.cat(parts))
        cosine = torch.nn.functional.cosine_similarity(embedded[0], embedded[1], dim=-1).numpy()
        return {"spearman": round(float(metrics.spearman(np.asarray(scores), cosine)), 5)}

    return evaluate


def loop_settings(cfg: Any) -> trainer.Settings:
    """The loop settings carried by a finetune/distill config (TrainConfig)."""
    return trainer.Settings(
        max_steps=cfg.max_steps,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        grad_accum=cfg.grad_accum,
        eval_every=cfg.eval_every,
        save_every=cfg.save_every,
        patience=cfg.patience,
        precision=cfg.precision,
    )


def fit(
    model: Any,
    path: Path,
    train: Any,
    dev: Any,
    names: list[str],
    cfg: Any,
    task: str,
    loss_fn: LossFn,
    work: Path,
    fingerprint: str,
) -> dict[str, Any]:
    """Train `model` with `loss_fn` on `train`, choosing the best checkpoint on `dev`."""
    from edgeslim.steps.finetune import label_values

    train_labels = label_values(train, task, names)
    dev_labels = label_values(dev, task, names)
    settings = loop_settings(cfg)
    return trainer.train(
        model,
        loss_fn,
        batch_maker(path, train, train_labels, task, cfg),
        dev_metric(path, dev, dev_labels, task, cfg),
        METRIC[task],
        work,
        settings,
        fingerprint,
    )
