"""Accuracy-aware exclusion: keep the most sensitive nodes in fp32 until the drop fits.

Nodes are ranked once by how much SQNR each loses in the fully quantized graph (its input's
SQNR minus its output's); then rounds keep the worst 1, 2, 4, ... nodes in fp32 (re-quantizing
each time, with calibration reused) until the accuracy drop is within budget. Deterministic:
same data, same ranking, same rounds. The best artifact found is always kept.

The --eval rows are split (seeded) into a selection half, on which nodes are ranked and the
rounds are judged, and a held-out half, on which the final drop is measured and the budget
decided: a drop measured on the rows that chose the fp32 nodes would be optimistic.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeslim import artifacts
from edgeslim.errors import InputError

SENSITIVE_OPS = {
    "dynamic": ("MatMul", "Gemm", "Attention", "Gather", "EmbedLayerNormalization"),
    "static": ("MatMul", "Gemm", "Gather", "EmbedLayerNormalization"),
    "weight-only": ("MatMul", "Gather", "EmbedLayerNormalization"),
}


def _move_model(src_dir: Path, dst_dir: Path) -> None:
    for stale in artifacts.model_files(dst_dir):
        stale.unlink()
    for part in artifacts.model_files(src_dir):
        os.replace(part, dst_dir / part.name)


SPLIT_SEED = 0


@dataclass(frozen=True)
class EvalSplit:
    """Tokenized --eval data: a selection half (search) and a held-out half (final drop)."""

    select: list[Any]
    select_labels: Any
    held: list[Any]
    held_labels: Any


def split_rows(count: int, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """(selection rows, held-out rows): a seeded half each (selection gets the odd one), disjoint."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(count)
    half = (count + 1) // 2
    return sorted(order[:half].tolist()), sorted(order[half:].tolist())


def load_eval(src: Path, cfg: Any) -> EvalSplit:
    """Validate, split and tokenize the --eval data. Fails before any work."""
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
    if len(examples) < 2:
        raise InputError(
            f"{cfg.eval} has {len(examples)} example(s): --max-drop needs at least 2 (half selects "
            "the fp32 nodes, half measures the drop); give more labelled rows"
        )
    select, held = split_rows(len(examples))
    return EvalSplit(
        evaluation.feeds_for(src, examples.take(select, examples.name)),
        labels[select],
        evaluation.feeds_for(src, examples.take(held, examples.name)),
        labels[held],
    )


def meet_drop(
    src: Path, out: Path, cfg: Any, quantize: Callable[[list[str], Path], None], work: Path, split: EvalSplit
) -> dict[str, Any]:
    """Search exclusions on the selection half until fp32 minus quantized accuracy <= cfg.max_drop;
    report (and judge the budget by) the drop on the held-out half."""
    from edgeslim import evaluation, quantization, ui

    batches, labels = split.select, split.select_labels
    base = evaluation.accuracy(src / artifacts.MODEL, batches, labels)
    best = evaluation.accuracy(out / artifacts.MODEL, batches, labels)
    rounds: list[dict[str, Any]] = [{"kept_fp32": 0, "accuracy": best}]
    ui.note(
        f"selection half: fp32 accuracy {base:.4f}, quantized {best:.4f} (budget: drop <= {cfg.max_drop})"
    )
    excluded: list[str] = []
    ranking: list[dict[str, Any]] = []
    if base - best > cfg.max_drop:
        ranking = quantization.node_sensitivity(
            src / artifacts.MODEL, out / artifacts.MODEL, batches[:4], SENSITIVE_OPS[cfg.mode]
        )
        names = [r["node"] for r in ranking][: cfg.max_fp32_nodes]
        best, excluded = _rounds(out, quantize, work, names, (base, best, cfg.max_drop), split, rounds)
    held_base = evaluation.accuracy(src / artifacts.MODEL, split.held, split.held_labels)
    held_acc = evaluation.accuracy(out / artifacts.MODEL, split.held, split.held_labels)
    drop = round(held_base - held_acc, 6)
    ui.note(f"held-out half: fp32 accuracy {held_base:.4f}, quantized {held_acc:.4f}, drop {drop:.4f}")
    return {
        "metric": "accuracy",
        "data": cfg.eval,
        "n": len(labels) + len(split.held_labels),
        "split": {"seed": SPLIT_SEED, "selection": len(labels), "held_out": len(split.held_labels)},
        "baseline": held_base,
        "accuracy": held_acc,
        "drop": drop,
        "met": drop <= cfg.max_drop,
        "selection": {"baseline": base, "accuracy": best, "drop": round(base - best, 6)},
        "held_out": {"baseline": held_base, "accuracy": held_acc, "drop": drop},
        "excluded": excluded,
        "rounds": rounds,
        "sensitivity": ranking[:10],
    }


def _rounds(
    out: Path,
    quantize: Callable[[list[str], Path], None],
    work: Path,
    names: list[str],
    figures: tuple[float, float, float],
    split: EvalSplit,
    rounds: list[dict[str, Any]],
) -> tuple[float, list[str]]:
    """Keep the worst 1, 2, 4, ... of `names` fp32 until the selection drop fits; the best
    round's model replaces out's. Returns (best selection accuracy, its fp32 nodes)."""
    from edgeslim import evaluation, ui

    base, best, max_drop = figures
    excluded: list[str] = []
    count = 1
    while base - best > max_drop and names:
        count = min(count, len(names))
        trial = work / f"round-{count}"
        trial.mkdir()
        quantize(names[:count], trial / artifacts.MODEL)
        accuracy = evaluation.accuracy(trial / artifacts.MODEL, split.select, split.select_labels)
        rounds.append({"kept_fp32": count, "accuracy": accuracy})
        ui.note(f"  {count} node(s) in fp32: selection accuracy {accuracy:.4f}")
        if accuracy > best:
            best, excluded = accuracy, names[:count]
            _move_model(trial, out)
        if count == len(names):
            break
        count *= 2
    return best, excluded
