"""Fidelity of one model's outputs against another's (SQNR, cosine, top-1 agreement, KL)."""

from __future__ import annotations

from typing import Any

import numpy as np


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

    Arrays are concatenated over batches: embeddings (N, D), logits (N, C) or (N*T, C).
    """
    result: dict[str, Any] = {}
    for name, ref in reference.items():
        got = test[name]
        entry: dict[str, Any] = {"sqnr_db": round(sqnr_db(ref, got), 2)}
        if name == "sentence_embedding":
            cos = cosine_rows(ref, got)
            entry.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))
        if name == "logits" and ref.shape[-1] > 1:
            entry.update(top1_agreement=float(np.mean(ref.argmax(-1) == got.argmax(-1))),
                         kl=kl_divergence(ref, got))
        result[name] = entry
    return result
