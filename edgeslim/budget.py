"""Accuracy-aware exclusion: keep the most sensitive nodes in fp32 until the drop fits.

Nodes are ranked once by how much SQNR each loses in the fully quantized graph (its input's
SQNR minus its output's); then rounds keep the worst 1, 2, 4, ... nodes in fp32 (re-quantizing
each time, with calibration reused) until the accuracy drop is within budget. Deterministic:
same data, same ranking, same rounds. The best artifact found is always kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeslim import artifacts
from edgeslim.errors import InputError

SENSITIVE_OPS = {
    "dynamic": ("MatMul", "Gemm", "Attention", "Gather"),
    "static": ("MatMul", "Gemm", "Gather"),
    "weight-only": ("MatMul", "Gather"),
}


def _move_model(src_dir: Path, dst_dir: Path) -> None:
    for stale in artifacts.model_files(dst_dir):
        stale.unlink()
    for part in artifacts.model_files(src_dir):
        os.replace(part, dst_dir / part.name)


def load_eval(src: Path, cfg: Any) -> tuple[list[Any], Any]:
    """Validate and tokenize the --eval data: (batches, label ids). Fails before any work."""
    from edgeslim import data, evaluation

    if not cfg.eval:
        raise InputError("--max-drop needs --eval DATA with labels to measure the drop")
    if cfg.mode not in SENSITIVE_OPS:
        raise InputError(f"--max-drop applies to {', '.join(SENSITIVE_OPS)} modes, not {cfg.mode}")
    task = artifacts.read_manifest(src).get("task")
    if task != "sequence-classification":
        raise InputError(
            f"--max-drop measures accuracy of sequence-classification artifacts; {src} is {task}"
        )
    examples = data.load_labelled(
        cfg.eval, cfg.text_column, cfg.pair_column, cfg.label_column, cfg.data_dir, cfg.eval_size
    )
    labels = evaluation.label_ids(examples, src)
    return evaluation.feeds_for(src, examples), labels


def meet_drop(
    src: Path,
    out: Path,
    cfg: Any,
    quantize: Callable[[list[str], Path], None],
    work: Path,
    batches: list[Any],
    labels: Any,
) -> dict[str, Any]:
    """Search exclusions so that fp32 accuracy minus quantized accuracy <= cfg.max_drop."""
    from edgeslim import evaluation, quantization, ui

    base = evaluation.accuracy(src / artifacts.MODEL, batches, labels)
    best = evaluation.accuracy(out / artifacts.MODEL, batches, labels)
    rounds: list[dict[str, Any]] = [{"kept_fp32": 0, "accuracy": best}]
    ui.note(f"fp32 accuracy {base:.4f}, quantized {best:.4f} (budget: drop <= {cfg.max_drop})")
    excluded: list[str] = []
    ranking: list[dict[str, Any]] = []
    if base - best > cfg.max_drop:
        ranking = quantization.node_sensitivity(
            src / artifacts.MODEL, out / artifacts.MODEL, batches[:4], SENSITIVE_OPS[cfg.mode]
        )
        names, count = [r["node"] for r in ranking], 1
        if cfg.max_fp32_nodes is not None:
            names = names[: cfg.max_fp32_nodes]
        while base - best > cfg.max_drop and names:
            count = min(count, len(names))
            trial = work / f"round-{count}"
            trial.mkdir()
            quantize(names[:count], trial / artifacts.MODEL)
            accuracy = evaluation.accuracy(trial / artifacts.MODEL, batches, labels)
            rounds.append({"kept_fp32": count, "accuracy": accuracy})
            ui.note(f"  {count} node(s) in fp32: accuracy {accuracy:.4f}")
            if accuracy > best:
                best, excluded = accuracy, names[:count]
                _move_model(trial, out)
            if count == len(names):
                break
            count *= 2
    return {
        "metric": "accuracy",
        "data": cfg.eval,
        "n": len(labels),
        "baseline": base,
        "accuracy": best,
        "drop": round(base - best, 6),
        "met": base - best <= cfg.max_drop,
        "excluded": excluded,
        "rounds": rounds,
        "sensitivity": ranking[:10],
    }
