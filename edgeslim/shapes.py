"""Student shapes: the candidate grid, the latency filter and Pareto sets over measured rows,
and their report (table, terminal lines, plot). The step (edgeslim/steps/shapes.py) builds and
times the models; everything here works on plain numbers, so it is tested on injected ones.

A row is a dict: name, shape, parameters, encoder_parameters (without the embedding tables),
size_mb, median_ms, p90_ms, speedup (teacher median / this median) and its speedup_ci95, then
kept / front flags and, once distilled, metric, accuracy and accuracy_ci95.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
# Objectives: (row key, +1 lower is better / -1 higher is better).
# Before distillation the accuracy is unknown; a latency-size front would be one point (the
# smallest shape is also the fastest), so the shapes worth distilling are those that buy the
# most capacity (encoder parameters) for their latency: no other kept shape is faster and larger.
CAPACITY = (("median_ms", 1), ("encoder_parameters", -1))
QUALITY = (("median_ms", 1), ("size_mb", 1), ("accuracy", -1))  # once distilled and scored


@dataclass(frozen=True)
class Shape:
    """One encoder shape."""

    layers: int
    hidden: int
    heads: int
    ffn: int

    @property
    def name(self) -> str:
        return f"L{self.layers}-H{self.hidden}-A{self.heads}-F{self.ffn}"


# (BERT-style config key, DistilBERT key) per Shape field
KEYS = {
    "layers": ("num_hidden_layers", "n_layers"),
    "hidden": ("hidden_size", "dim"),
    "heads": ("num_attention_heads", "n_heads"),
    "ffn": ("intermediate_size", "hidden_dim"),
}


def of_config(config: dict[str, Any]) -> Shape:
    """The Shape of a model from its config.json."""
    return Shape(**{f: int(config[a] if a in config else config[b]) for f, (a, b) in KEYS.items()})


@dataclass(frozen=True)
class Grid:
    """Candidate values per dimension; None: the teacher's (heads from head_dim, FFN from
    ffn_ratio x hidden when those are given instead)."""

    layers: tuple[int, ...] | None = None
    hidden: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    head_dim: tuple[int, ...] | None = None
    ffn: tuple[int, ...] | None = None
    ffn_ratio: tuple[float, ...] | None = None


def _problem(shape: Shape, teacher: Shape) -> str | None:
    """Why `shape` cannot be a student of `teacher`, or None."""
    if shape.hidden % shape.heads:
        return f"hidden {shape.hidden} is not divisible by {shape.heads} heads"
    larger = [
        f"{f} {getattr(shape, f)} > {getattr(teacher, f)}"
        for f in KEYS
        if getattr(shape, f) > getattr(teacher, f)
    ]
    return "larger than the teacher (" + ", ".join(larger) + ")" if larger else None


def candidates(grid: Grid, teacher: Shape) -> tuple[list[Shape], list[Row]]:
    """(valid shapes in grid order, skipped combinations with a note each)."""
    valid: list[Shape] = []
    skipped: list[Row] = []
    for layers, hidden in itertools.product(
        grid.layers or (teacher.layers,), grid.hidden or (teacher.hidden,)
    ):
        for heads, ffn in itertools.product(_heads(grid, teacher, hidden), _ffns(grid, teacher, hidden)):
            if isinstance(heads, str):
                skipped.append({"shape": {"layers": layers, "hidden": hidden, "ffn": ffn}, "note": heads})
                continue
            shape = Shape(layers, hidden, heads, ffn)
            problem = _problem(shape, teacher)
            if problem:
                skipped.append({"name": shape.name, "shape": asdict(shape), "note": problem})
            elif shape not in valid:
                valid.append(shape)
    return valid, skipped


def _heads(grid: Grid, teacher: Shape, hidden: int) -> list[int | str]:
    """Head counts for `hidden`; a string notes a head width that does not divide it."""
    if grid.heads is not None:
        return list(grid.heads)
    widths = grid.head_dim or (teacher.hidden // teacher.heads,)
    return [
        hidden // d if hidden % d == 0 else f"hidden {hidden} is not divisible by head_dim {d}"
        for d in widths
    ]


def _ffns(grid: Grid, teacher: Shape, hidden: int) -> list[int]:
    if grid.ffn is not None:
        return list(grid.ffn)
    return [max(1, round(r * hidden)) for r in grid.ffn_ratio or (teacher.ffn / teacher.hidden,)]


def dominated(row: Row, other: Row, objectives: tuple[tuple[str, int], ...]) -> bool:
    """True when `other` is at least as good as `row` on every objective and better on one."""
    at_least = all(sign * other[key] <= sign * row[key] for key, sign in objectives)
    return at_least and any(sign * other[key] < sign * row[key] for key, sign in objectives)


def pareto(rows: list[Row], objectives: tuple[tuple[str, int], ...]) -> list[Row]:
    """The rows no other row dominates, fastest first."""
    front = [r for r in rows if not any(dominated(r, o, objectives) for o in rows if o is not r)]
    return sorted(front, key=lambda r: (r["median_ms"], r["size_mb"]))


def within(row: Row, latency_ms: float | None, speedup: float | None) -> bool:
    """The measured median meets latency_ms and the measured speedup meets speedup."""
    fast = latency_ms is None or row["median_ms"] <= latency_ms
    return fast and (speedup is None or row["speedup"] >= speedup)


def select(
    rows: list[Row], latency_ms: float | None, speedup: float | None, keep: int, order: str
) -> list[Row]:
    """Mark each row `kept` (within the target) and `front` (on the CAPACITY front of the kept
    ones); return the kept rows to distill, at most `keep`: order "front" takes the front first,
    most encoder parameters first (the capacity the latency budget buys), "fastest" by median."""
    kept = [r for r in rows if within(r, latency_ms, speedup)]
    front = {id(r) for r in pareto(kept, CAPACITY)}
    for r in rows:
        r["kept"], r["front"] = r in kept, id(r) in front
    if order == "fastest":
        ordered = sorted(kept, key=lambda r: r["median_ms"])
    else:
        ordered = sorted(kept, key=lambda r: (not r["front"], -r["encoder_parameters"], r["median_ms"]))
    return ordered[:keep]


def mark_quality_front(rows: list[Row]) -> None:
    """Flag `quality_front` on the distilled rows no other beats on latency, size and accuracy."""
    front = {id(r) for r in pareto([r for r in rows if r.get("accuracy") is not None], QUALITY)}
    for r in rows:
        r["quality_front"] = id(r) in front


def best(rows: list[Row]) -> Row | None:
    """The chosen student: the most accurate int8 among the distilled (kept, so within the
    latency target) shapes; the faster one on a tie."""
    scored = [r for r in rows if r.get("accuracy") is not None]
    return max(scored, key=lambda r: (r["accuracy"], -r["median_ms"]), default=None)


def brief(row: Row) -> str:
    """One line: name, latency, size, accuracy when scored."""
    encoder = f"{row['encoder_parameters'] / 1e6:.3g}M encoder params"
    text = f"{row['name']} {row['median_ms']} ms {row['size_mb']} MB {encoder}"
    return text + (f" {row['metric']} {row['accuracy']}" if row.get("accuracy") is not None else "")


def lines(rows: list[Row], reference: Row, setting: str, target: str) -> list[str]:
    """The terminal's view: the teacher, the target, the front(s)."""
    kept = [r for r in rows if r.get("kept")]
    text = [
        f"shapes: teacher int8 {reference['median_ms']} ms, {reference['size_mb']} MB ({setting}); "
        f"target {target}: {len(kept)} of {len(rows)} kept",
        "shapes: Pareto set of the kept shapes (latency down, encoder parameters up):",
    ]
    text += [f"  {brief(r)}  speedup {r['speedup']}x" for r in pareto(kept, CAPACITY)] or ["  none"]
    scored = [r for r in rows if r.get("quality_front")]
    if scored:
        text.append("shapes: Pareto set of the distilled shapes (latency, size down, accuracy up):")
        text += [f"  {brief(r)}" for r in scored]
    return text


def markdown(result: dict[str, Any], setting: str, target: str) -> str:
    """shapes.md: settings, every candidate (front members marked), the skipped combinations."""
    lines = [
        f"# Student shapes of {result['teacher']['path']}",
        "",
        f"Fused dynamic int8 (embeddings quantized), {setting}, CPU: {result['cpu']}. Target: {target}. "
        "P: on the front of the kept shapes (no kept shape is faster with more encoder parameters)"
        + ("; A: on the latency-size-accuracy front of the distilled ones." if result["chosen"] else "."),
        "",
        "| shape | layers | hidden | heads | FFN | params | encoder params | MB | p50 ms | p90 ms "
        "| speedup vs teacher (95% CI) | kept | Pareto | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in [result["reference"], *result["candidates"]]:
        s, (low, high) = r["shape"], r["speedup_ci95"]
        marks = ("P" if r.get("front") else "") + ("A" if r.get("quality_front") else "")
        chosen = " (chosen)" if r["name"] == result["chosen"] else ""
        score = f"{r['metric']} {r['accuracy']}{chosen}" if r.get("accuracy") is not None else ""
        kept = "" if "kept" not in r else "yes" if r["kept"] else "no"
        lines.append(
            f"| {r['name']} | {s['layers']} | {s['hidden']} | {s['heads']} | {s['ffn']} "
            f"| {r['parameters']:,} | {r['encoder_parameters']:,} | {r['size_mb']} | {r['median_ms']} "
            f"| {r['p90_ms']} | {r['speedup']} ({low}-{high}) | {kept} | {marks} | {score} |"
        )
    if result["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s.get('name') or s['shape']}: {s['note']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], title: str, limit_ms: float, path: Path) -> None:
    """Latency vs encoder parameters (every candidate; kept, front, teacher and the latency
    limit `limit_ms` marked; marker area ~ MB) and, when distilled, latency vs accuracy; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, reference = result["candidates"], result["reference"]
    scored = [r for r in rows if r.get("accuracy") is not None]
    fig, axes = plt.subplots(1, 2 if scored else 1, figsize=(12 if scored else 7, 4.5), squeeze=False)
    groups = (
        ("over target", [r for r in rows if not r["kept"]], "lightgray"),
        ("kept", [r for r in rows if r["kept"] and not r["front"]], "tab:blue"),
        ("Pareto", [r for r in rows if r["front"]], "tab:red"),
        ("teacher int8", [reference], "black"),
    )
    ax = axes[0][0]
    for label, group, color in groups:
        _scatter(ax, group, "encoder_parameters", label, color)
    if limit_ms < 2 * max(r["median_ms"] for r in [reference, *rows]):
        ax.axvline(limit_ms, ls="--", c="gray", label="target")
    ax.set(xlabel="median latency (ms)", ylabel="encoder parameters", title=title)
    ax.legend(fontsize=7)
    if scored:
        _scatter(axes[0][1], scored, "accuracy", "distilled", "tab:red")
        axes[0][1].set(xlabel="median latency (ms)", ylabel=f"int8 {scored[0]['metric']}", title="distilled")
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _scatter(ax: Any, rows: list[Row], key: str, label: str, color: str) -> None:
    xs, ys = [r["median_ms"] for r in rows], [r[key] for r in rows]
    ax.scatter(xs, ys, s=[20 + 3 * r["size_mb"] for r in rows], c=color, label=label, alpha=0.8)
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(r["name"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
