"""Run an artifact over a dataset: outputs, fidelity against another artifact, accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import data, runtime
from edgeslim.errors import InputError
from edgeslim.metrics import cosine_rows, kl_divergence, sqnr_db

Feeds = dict[str, np.ndarray]


def feeds_for(artifact: Path, examples: data.Examples, batch_size: int = 32) -> list[Feeds]:
    """Tokenized, padded batches for `artifact` (its tokenizer and max length)."""
    manifest = json.loads((artifact / "edgeslim.json").read_text())
    return list(data.batches(artifact, examples, batch_size, int(manifest.get("max_length", 512))))


def outputs(model: Path, batches: list[Feeds]) -> list[dict[str, np.ndarray]]:
    """Every graph output for every batch."""
    sess = runtime.session(model)
    return [runtime.run(sess, feeds) for feeds in batches]


def compare(reference: list[dict[str, np.ndarray]], test: list[dict[str, np.ndarray]],
            batches: list[Feeds]) -> dict[str, Any]:
    """Per output SQNR over real (unpadded) positions; embedding cosine; logits top-1 and KL."""
    result: dict[str, Any] = {}
    for name in reference[0]:
        ref_rows, got_rows = [], []
        for feeds, ref, got in zip(batches, reference, test, strict=True):
            mask = feeds["attention_mask"].astype(bool)
            r, g = ref[name], got[name].astype(np.float32)
            if r.ndim == 3:  # (B, T, X): keep real tokens only -> (n_tokens, X)
                r, g = r[mask], g[mask]
            ref_rows.append(r.reshape(len(r), -1))
            got_rows.append(g.reshape(len(g), -1))
        ref_all, got_all = np.concatenate(ref_rows), np.concatenate(got_rows)
        entry: dict[str, Any] = {"sqnr_db": round(sqnr_db(ref_all, got_all), 2)}
        if name == "sentence_embedding":
            cos = cosine_rows(ref_all, got_all)
            entry.update(cosine_mean=round(float(cos.mean()), 5), cosine_min=round(float(cos.min()), 5))
        if name == "logits" and ref_all.shape[-1] > 1:
            entry.update(top1_agreement=round(float(np.mean(ref_all.argmax(-1) == got_all.argmax(-1))), 5),
                         kl=float(kl_divergence(ref_all, got_all)))
        result[name] = entry
    return result


def label_ids(examples: data.Examples, artifact: Path) -> np.ndarray:
    """Gold labels as class ids through the model's label2id (or integer labels)."""
    if examples.labels is None:
        raise InputError(f"{examples.name} has no labels: pass --label-column")
    config = json.loads((artifact / "config.json").read_text())
    label2id = {str(k): int(v) for k, v in (config.get("label2id") or {}).items()}
    num = len(config.get("id2label") or label2id) or 2
    ids = []
    for label in examples.labels:
        if label in label2id:
            ids.append(label2id[label])
        elif label.lstrip("-").isdigit() and 0 <= int(label) < num:
            ids.append(int(label))
        else:
            known = ", ".join(label2id) or f"0..{num - 1}"
            raise InputError(f"label '{label}' in {examples.name} is not known to the model ({known})")
    return np.asarray(ids)


def accuracy(model: Path, batches: list[Feeds], labels: np.ndarray) -> float:
    """Top-1 accuracy of a sequence classifier."""
    preds = np.concatenate([o["logits"].argmax(-1) for o in outputs(model, batches)])
    return float(np.mean(preds == labels))
