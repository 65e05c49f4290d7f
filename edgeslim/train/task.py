"""Glue between datasets, models and the loop: labelled task data, encoded batches, task
losses, dev metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import data, models
from edgeslim.errors import InputError
from edgeslim.train import loop
from edgeslim.train.batches import batch_order, collate, encode
from edgeslim.train.config import TrainConfig

METRIC = {
    "sequence-classification": "accuracy",
    "regression": "pearson",
    "token-classification": "accuracy",
    "feature-extraction": "spearman",  # of pair similarities (embedding distillation)
}


def label_kind(task: str) -> str:
    return {"regression": "regression", "token-classification": "token"}.get(task, "class")


def task_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
    """The model's own loss on gold labels (cross-entropy, or MSE for regression)."""
    out = model(**batch)
    return out.loss, {}


def _label_order(label: str) -> tuple[bool, int, str]:
    """Integer labels in numeric order (0, 1, 2, ... 10), then the rest alphabetically."""
    numeric = label.lstrip("-").isdigit()
    return (not numeric, int(label) if numeric else 0, label)


def load_task_data(cfg: TrainConfig, task: str) -> tuple[data.Examples, data.Examples, list[str]]:
    """(train examples, dev examples, label names) with labels checked against the task."""
    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    train, dev, _ = data.train_and_dev(
        cfg.data, cfg.eval, columns, cfg.data_dir, (cfg.train_size, cfg.eval_size)
    )
    if train.labels is None or dev.labels is None:
        raise InputError("training needs labels: pass --label-column")
    if task == "regression":
        data.scores(train), data.scores(dev)  # numeric, finite: InputError naming the row
        return train, dev, []
    if task == "token-classification":
        names = sorted({tag for tags in train.labels for tag in tags.split(" ")})
        seen = {tag for tags in dev.labels for tag in tags.split(" ")}
    else:
        names = sorted(set(train.labels), key=_label_order)
        seen = set(dev.labels)
    if len(names) > 1000 or (task == "sequence-classification" and len(names) > len(train) / 2):
        raise InputError(f"{cfg.data} has {len(names)} distinct labels: is this a {task} dataset?")
    unknown = seen - set(names)
    if unknown:
        raise InputError(
            f"dev labels {sorted(unknown)[:5]} do not occur in the training data: "
            f"is {task} the right --task for {cfg.data}?"
        )
    return train, dev, names


def label_values(examples: data.Examples, task: str, names: list[str]) -> list[Any]:
    """Labels as training targets: floats (regression), class ids, or per-word id lists."""
    index = {name: i for i, name in enumerate(names)}
    labels = examples.labels or []
    if task == "regression":
        return [float(x) for x in labels]
    if task == "token-classification":
        return [[index[tag] for tag in tags.split(" ")] for tags in labels]
    return [index[x] for x in labels]


def token_limit(path: Path, cfg: TrainConfig) -> int:
    """--max-length, capped by the longest input the model takes."""
    return min(cfg.max_length, models.max_length(path, models.read_config(path)))


def batch_maker(
    path: Path, examples: data.Examples, labels: list[Any] | None, task: str, cfg: TrainConfig
) -> Callable[[int], list[dict[str, Any]]]:
    """epoch -> that epoch's padded, length-bucketed batches (tokenized once)."""
    pad = models.pad_id(models.read_config(path))
    encoded = encode(path, examples, token_limit(path, cfg), labels, words=task == "token-classification")
    lengths = [len(x) for x in encoded.ids]
    kind = label_kind(task)
    cache: dict[int, list[dict[str, Any]]] = {}

    def batches(epoch: int) -> list[dict[str, Any]]:
        if epoch not in cache:
            cache.clear()
            order = batch_order(lengths, cfg.batch_size, cfg.seed, epoch)
            cache[epoch] = [collate(encoded, idx, pad, kind) for idx in order]
        return cache[epoch]

    return batches


def dev_metric(
    path: Path, dev: data.Examples, labels: list[Any], task: str, cfg: TrainConfig
) -> Callable[[Any], dict[str, float]]:
    """model -> {metric: value} on the dev set (in order, no shuffling)."""
    import torch

    from edgeslim import metrics

    pad = models.pad_id(models.read_config(path))
    encoded = encode(path, dev, token_limit(path, cfg), labels, words=task == "token-classification")
    order = [list(range(i, min(i + 64, len(encoded)))) for i in range(0, len(encoded), 64)]
    batches = [collate(encoded, idx, pad, label_kind(task)) for idx in order]

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
    path: Path, dev: data.Examples, scores: list[float], pooling: str, cfg: TrainConfig
) -> Callable[[Any], dict[str, float]]:
    """model -> {"spearman": rho} between the cosine of each pair's pooled embeddings and the
    gold scores (STS-style dev sets)."""
    import torch

    from edgeslim import metrics

    pad = models.pad_id(models.read_config(path))
    sides = []
    for texts in (dev.texts, dev.pairs or []):
        encoded = encode(path, data.Examples(dev.name, texts), token_limit(path, cfg), None)
        order = [list(range(i, min(i + 64, len(encoded)))) for i in range(0, len(encoded), 64)]
        sides.append([collate(encoded, idx, pad, "class") for idx in order])

    def evaluate(model: Any) -> dict[str, float]:
        embedded = []
        with torch.no_grad():
            for batches in sides:
                parts = []
                for batch in batches:
                    feeds = {k: v for k, v in batch.items() if k != "labels"}
                    student = getattr(model, "student", model)
                    hidden = student(**feeds).last_hidden_state  # (B, T, H)
                    parts.append(models.pool(hidden, feeds["attention_mask"], pooling))
                embedded.append(torch.cat(parts))
        cosine = torch.nn.functional.cosine_similarity(embedded[0], embedded[1], dim=-1).numpy()
        return {"spearman": round(float(metrics.spearman(np.asarray(scores), cosine)), 5)}

    return evaluate


def loop_settings(cfg: TrainConfig) -> loop.Settings:
    """The loop settings carried by a finetune/distill config (TrainConfig)."""
    return loop.Settings(
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
    train: data.Examples,
    dev: data.Examples,
    names: list[str],
    cfg: TrainConfig,
    task: str,
    loss_fn: loop.LossFn,
    work: Path,
    fingerprint: str,
) -> dict[str, Any]:
    """Train `model` with `loss_fn` on `train`, choosing the best checkpoint on `dev`."""
    train_labels = label_values(train, task, names)
    dev_labels = label_values(dev, task, names)
    settings = loop_settings(cfg)
    return loop.train(
        model,
        loss_fn,
        batch_maker(path, train, train_labels, task, cfg),
        dev_metric(path, dev, dev_labels, task, cfg),
        METRIC[task],
        work,
        settings,
        fingerprint,
    )
