"""Fidelity of one model's outputs against another's (SQNR, cosine, top-1 agreement, KL)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeslim.defaults import BOOTSTRAP


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per row of two (N, D) arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.asarray(np.sum(a64 * b64, axis=1) / np.maximum(norms, 1e-12))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=-1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))


def kl_divergence(reference_logits: np.ndarray, test_logits: np.ndarray) -> float:
    """Mean KL(reference || test) over rows of logits."""
    p_log, q_log = _log_softmax(reference_logits), _log_softmax(test_logits)
    return float(np.mean(np.sum(np.exp(p_log) * (p_log - q_log), axis=-1)))


def fidelity(reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per output: SQNR; embeddings: cosine mean/min; logits: top-1 agreement and KL.

    Arrays are rows over the whole data set: embeddings (N, D), logits (N, C) or (N*T, C).
    """
    result: dict[str, Any] = {}
    for name, ref in reference.items():
        got = test[name]
        entry: dict[str, Any] = {"sqnr_db": round(sqnr_db(ref, got), 2)}
        if name == "sentence_embedding":
            cos = cosine_rows(ref, got)
            entry.update(cosine_mean=round(float(cos.mean()), 5), cosine_min=round(float(cos.min()), 5))
        if name == "logits" and ref.shape[-1] > 1:
            entry.update(
                top1_agreement=round(float(np.mean(ref.argmax(-1) == got.argmax(-1))), 5),
                kl=float(kl_divergence(ref, got)),
            )
        result[name] = entry
    return result


# Task metrics. numpy only, so `edgeslim eval` runs in the runtime install (no scipy/sklearn);
# tests check each against scikit-learn / scipy.


def accuracy(gold: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of exact matches."""
    return float(np.mean(gold == pred))


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or pred."""
    scores = []
    for label in np.union1d(gold, pred):
        tp = np.sum((pred == label) & (gold == label))
        fp, fn = np.sum((pred == label) & (gold != label)), np.sum((pred != label) & (gold == label))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def mcc(gold: np.ndarray, pred: np.ndarray) -> float:
    """Matthews correlation coefficient (multi-class, Gorodkin's R_K)."""
    labels = np.union1d(gold, pred)
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)))
    for g, p in zip(gold, pred, strict=True):
        confusion[index[g], index[p]] += 1
    t, p_sum, n = confusion.sum(1), confusion.sum(0), confusion.sum()
    c = np.trace(confusion)
    denominator = np.sqrt((n**2 - p_sum @ p_sum) * (n**2 - t @ t))
    return float((c * n - t @ p_sum) / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation."""
    x64, y64 = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denominator = np.sqrt((x64**2).sum() * (y64**2).sum())
    return float((x64 * y64).sum() / denominator) if denominator else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation."""
    return pearson(_ranks(np.asarray(x)), _ranks(np.asarray(y)))


def bootstrap_ci(
    metric: Any,
    gold: np.ndarray,
    pred: np.ndarray,
    samples: int = BOOTSTRAP,
    seed: int = 0,
    paired: bool = True,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of metric(gold, pred).

    paired: row i of gold and pred belong together (one example; one round of interleaved
    runs), so rows are resampled jointly; else each array is resampled on its own."""
    if paired and len(gold) != len(pred):
        raise ValueError(f"a paired bootstrap needs equal lengths, not {len(gold)} and {len(pred)}")
    rng = np.random.default_rng(seed)
    n, m = len(gold), len(pred)
    values = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        values.append(metric(gold[idx], pred[idx if paired else rng.integers(0, m, m)]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
