"""Run an artifact over a dataset: outputs, fidelity against another artifact, accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import data, sessions
from edgeslim.defaults import BOOTSTRAP
from edgeslim.errors import InputError
from edgeslim.metrics import cosine_rows, fidelity

Feeds = dict[str, np.ndarray]


def feeds_for(artifact: Path, examples: data.Examples, batch_size: int = 32) -> list[Feeds]:
    """Tokenized, padded batches for `artifact` (its tokenizer and max length)."""
    from edgeslim import artifacts

    max_len = artifacts.max_length(artifacts.read_manifest(artifact))
    return list(data.batches(artifact, examples, batch_size, max_len))


def outputs(model: Path, batches: list[Feeds]) -> list[dict[str, np.ndarray]]:
    """Every graph output for every batch."""
    sess = sessions.session(model)
    return [sessions.run(sess, feeds) for feeds in batches]


def compare(
    reference: list[dict[str, np.ndarray]], test: list[dict[str, np.ndarray]], batches: list[Feeds]
) -> dict[str, Any]:
    """Per output SQNR over real (unpadded) positions; embedding cosine; logits top-1 and KL
    (metrics.fidelity over every batch's rows)."""
    reference_rows: dict[str, np.ndarray] = {}
    test_rows: dict[str, np.ndarray] = {}
    for name in reference[0]:
        refs, gots = [], []
        for feeds, ref, got in zip(batches, reference, test, strict=True):
            mask = feeds["attention_mask"].astype(bool)
            r, g = ref[name], got[name].astype(np.float32)
            if r.ndim == 3:  # (B, T, X): keep real tokens only -> (n_tokens, X)
                r, g = r[mask], g[mask]
            refs.append(r.reshape(len(r), -1))
            gots.append(g.reshape(len(g), -1))
        reference_rows[name], test_rows[name] = np.concatenate(refs), np.concatenate(gots)
    return fidelity(reference_rows, test_rows)


def label_ids(examples: data.Examples, artifact: Path) -> np.ndarray:
    """Gold labels as class ids through the model's label2id (or integer labels)."""
    if examples.labels is None:
        raise InputError(f"{examples.name} has no labels: pass --label-column")
    from edgeslim import models

    label2id, id2label = models.label_maps(artifact)
    num = len(id2label or label2id) or 2
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


def _metric(fn: Any, gold: np.ndarray, pred: np.ndarray, bootstrap: int) -> dict[str, Any]:
    from edgeslim.metrics import bootstrap_ci

    low, high = bootstrap_ci(fn, gold, pred, bootstrap)
    return {"value": round(fn(gold, pred), 5), "ci95": [round(low, 5), round(high, 5)]}


def _run(model: Path, batches: list[Feeds], label: str) -> list[dict[str, np.ndarray]]:
    from edgeslim import sessions, ui

    sess = sessions.session(model)
    return [sessions.run(sess, feeds) for feeds in ui.progress(batches, len(batches), label)]


def _entity_f1(gold: list[list[str]], pred: list[list[str]]) -> Any:
    try:
        from seqeval.metrics import f1_score
    except ImportError:
        from edgeslim.errors import MissingDependency

        raise MissingDependency("seqeval is not installed: pip install 'edgeslim[runtime]'") from None
    return lambda g_idx, p_idx: f1_score([gold[i] for i in g_idx], [pred[i] for i in p_idx])


def evaluate(
    artifact: Path,
    examples: data.Examples,
    batch_size: int = 32,
    bootstrap: int = BOOTSTRAP,
    reference: Path | None = None,
) -> dict[str, Any]:
    """Task metrics with 95% bootstrap CIs (and fidelity vs `reference`) for one artifact."""
    from edgeslim import artifacts
    from edgeslim.metrics import accuracy as acc
    from edgeslim.metrics import macro_f1, mcc, pearson, spearman

    manifest = artifacts.read_manifest(artifact)
    task, max_len = manifest["task"], artifacts.max_length(manifest)
    if not len(examples):
        raise InputError(f"{examples.name} is empty: nothing to evaluate")
    result: dict[str, Any] = {"task": task, "data": examples.name, "n": len(examples), "metrics": {}}
    model = artifact / artifacts.MODEL
    if task == "feature-extraction":
        if not examples.pairs or examples.labels is None:
            raise InputError(
                "embedding models are evaluated on sentence pairs with scores "
                "(e.g. stsb:dev): pass --pair-column and --label-column"
            )
        left = data.Examples(examples.name, examples.texts)
        right = data.Examples(examples.name, examples.pairs)
        embed = [
            np.concatenate(
                [
                    o["sentence_embedding"]
                    for o in _run(model, list(data.batches(artifact, side, batch_size, max_len)), "embedding")
                ]
            )
            for side in (left, right)
        ]
        cos = cosine_rows(embed[0], embed[1])
        gold = np.asarray(data.scores(examples))
        result["metrics"] = {
            "spearman_cosine": _metric(spearman, gold, cos, bootstrap),
            "pearson_cosine": _metric(pearson, gold, cos, bootstrap),
        }
        return result
    words = task == "token-classification"
    batches = list(data.batches(artifact, examples, batch_size, max_len, words=words))
    outs = _run(model, batches, "evaluating")
    if task == "token-classification":
        result["metrics"] = _token_metrics(artifact, examples, batches, outs, bootstrap)
    elif task == "regression":
        _labels(examples)
        gold = np.asarray(data.scores(examples))
        pred = np.concatenate([o["logits"][:, 0] for o in outs])
        result["metrics"] = {
            "pearson": _metric(pearson, gold, pred, bootstrap),
            "spearman": _metric(spearman, gold, pred, bootstrap),
        }
    else:
        gold = label_ids(examples, artifact)
        pred = np.concatenate([o["logits"].argmax(-1) for o in outs])
        result["metrics"] = {
            name: _metric(fn, gold, pred, bootstrap)
            for name, fn in (("accuracy", acc), ("macro_f1", macro_f1), ("mcc", mcc))
        }
    if reference is not None:
        ref_model = reference / artifacts.MODEL
        result["fidelity"] = compare(_run(ref_model, batches, "reference"), outs, batches)
    return result


def evaluate_data(
    artifact: Path,
    spec: str,
    columns: tuple[str | None, str | None, str | None] = (None, None, None),
    data_dir: Path | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    bootstrap: int = BOOTSTRAP,
    reference: Path | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """Load labelled data `spec` (text, pair and label `columns` of a user file; the first
    `limit` rows) and evaluate artifact `artifact` on it, as `evaluate` does. The result names
    its inputs (model and data hashes); with `reuse`, an eval step's stored result on the same
    inputs is returned instead of evaluating again (its metrics; its CIs may have more resamples)."""
    from edgeslim import artifacts

    manifest = artifacts.read_manifest(artifact)
    if reference is not None:
        artifacts.read_manifest(reference)
    examples = data.load_labelled(spec, *columns, data_dir, limit)
    inputs = {
        "model_sha256": artifacts.sha256_files(artifacts.model_files(artifact)),
        "data_sha256": _sha(examples),
    }
    stored = [s["result"] for s in manifest.get("steps", []) if s.get("type") == "eval" and s.get("result")]
    if reuse and reference is None:
        for result in reversed(stored):
            if isinstance(result, dict) and result.get("inputs") == inputs:
                return result
    return {**evaluate(artifact, examples, batch_size, bootstrap, reference), "inputs": inputs}


def _sha(examples: data.Examples) -> str:
    """sha256 of the examples' texts, pairs and labels (what a metric is computed on)."""
    import hashlib
    import json

    rows = json.dumps([examples.texts, examples.pairs, examples.labels], ensure_ascii=False)
    return hashlib.sha256(rows.encode()).hexdigest()


def _labels(examples: data.Examples) -> list[str]:
    if examples.labels is None:
        raise InputError(f"{examples.name} has no labels: pass --label-column")
    return examples.labels


def _token_metrics(
    artifact: Path,
    examples: data.Examples,
    batches: list[Feeds],
    outs: list[dict[str, np.ndarray]],
    bootstrap: int,
) -> dict[str, Any]:
    """Entity-level F1 (seqeval) from first-subtoken predictions, words beyond max length as O."""
    from edgeslim import models

    _, id2label = models.label_maps(artifact)
    gold = [labels.split(" ") for labels in _labels(examples)]
    known = set(id2label.values())
    unknown = sorted({tag for sentence in gold for tag in sentence} - known)
    if unknown:
        raise InputError(
            f"labels {', '.join(unknown[:5])} in {examples.name} are not known to the "
            f"model ({', '.join(sorted(known))})"
        )
    pred: list[list[str]] = []
    for feeds, out in zip(batches, outs, strict=True):
        ids = out["logits"].argmax(-1)  # (B, T)
        for row in range(ids.shape[0]):
            tags = ["O"] * len(gold[len(pred)])
            seen = set()
            for pos, word in enumerate(feeds["word_ids"][row]):
                if word >= 0 and word not in seen and word < len(tags):
                    seen.add(word)
                    tags[word] = id2label[int(ids[row, pos])]
            pred.append(tags)
    index = np.arange(len(gold))
    f1 = _entity_f1(gold, pred)
    return {"entity_f1": _metric(f1, index, index, bootstrap)}
