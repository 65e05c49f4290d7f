"""Reports: report.json (versioned, validated when read back), report.md, a self-contained
report.html with embedded PNG plots (latency distributions, accuracy-latency-size Pareto)."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeslim import artifacts
from edgeslim.errors import InputError

SCHEMA = "edgeslim.report/1"


class Entry(BaseModel):
    """One artifact in a report."""

    model_config = ConfigDict(extra="forbid")
    name: str
    path: str
    task: str | None
    size_mb: float
    parameters: int
    steps: list[str]  # the whole chain: model steps (finetune, distill, ...) then artifact steps
    role: str | None = None  # in a recipe's report: result, result fp32, teacher fp32, teacher int8, ...
    quantization: str | None = None
    metrics: dict[str, float] = {}
    fidelity: dict[str, dict[str, float]] = {}
    latency: dict[str, dict[str, Any]] = {}
    gate: list[dict[str, Any]] = []


class Report(BaseModel):
    """The whole report; `schema` names its version."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_name: Literal["edgeslim.report/1"] = Field("edgeslim.report/1", alias="schema")
    created: str
    environment: dict[str, Any]
    primary_metric: str | None
    latency_cell: str | None
    artifacts: list[Entry]
    plots: list[str] = []


def read(path: Path) -> Report:
    """Read and validate a report.json."""
    try:
        return Report.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise InputError(f"{path} is not a valid {SCHEMA} report ({str(exc).splitlines()[0]})") from None


def entry(
    directory: Path, bench_cells: list[dict[str, Any]], name: str | None = None, role: str | None = None
) -> Entry:
    """Collect what the manifest and inspection know about one artifact (named `name`, else
    after its directory); its steps start with the model steps its manifest's lineage records."""
    from edgeslim import inspection

    manifest = artifacts.read_manifest(directory)
    info = inspection.inspect(directory)
    metrics: dict[str, float] = {}
    for data, result in manifest.get("metrics", {}).items():
        if isinstance(result, dict) and "metrics" in result:
            metrics.update({f"{data}:{k}": v["value"] for k, v in result["metrics"].items()})
    quant = next((s for s in manifest["steps"] if s["type"] == "quantize"), None)
    fidelity = {k: {m: float(v) for m, v in e.items()} for k, e in (quant or {}).get("fidelity", {}).items()}
    gate: list[dict[str, Any]] = next(
        (s["budgets"] for s in reversed(manifest["steps"]) if s["type"] == "gate"), []
    )
    latency = {f"t{c['threads']}b{c['batch']}s{c['seq']}": c for c in bench_cells}
    return Entry(
        name=name or directory.name,
        role=role,
        path=str(directory),
        task=manifest.get("task"),
        size_mb=round(info["size_bytes"] / 1e6, 3),
        parameters=info["parameters"],
        steps=[s["type"] for s in [*manifest.get("lineage", []), *manifest["steps"]]],
        quantization=quant["config"]["mode"] if quant else None,
        metrics=metrics,
        fidelity=fidelity,
        latency=latency,
        gate=gate,
    )


def build(entries: list[Entry], environment: dict[str, Any], prefer: Sequence[str | None] = ()) -> Report:
    """A report over entries, choosing the metric and latency cell they all share; the metric is
    the first of `prefer` (data:metric names, or metric names) they share (see primary)."""
    common = set.intersection(*(set(e.metrics) for e in entries)) if entries else set()
    cells = set.intersection(*(set(e.latency) for e in entries)) if entries else set()
    preferred: list[str] = [c for c in ("t1b1s128", "t2b1s128") if c in cells]
    ordered = preferred + sorted(cells)
    return Report(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        environment=environment,
        primary_metric=primary(common, prefer),
        latency_cell=ordered[0] if ordered else None,
        artifacts=entries,
    )


# Each task's headline metric (evaluation.py): the primary metric when nothing names one.
HEADLINE = ("accuracy", "spearman_cosine", "entity_f1")


def primary(common: set[str], prefer: Sequence[str | None] = ()) -> str | None:
    """The headline among the `common` data:metric names: the first of `prefer` that is one of
    them, else the first whose metric is shared on other data (a budgets file may name the
    data by a path the eval step does not use), else the first by HEADLINE order and name."""
    if not common:
        return None
    wanted = [p for p in prefer if p]
    for name in wanted:
        if name in common:
            return name
    for name in wanted:
        metric = name.rsplit(":", 1)[-1]
        named = [m for m in common if m.rsplit(":", 1)[-1] == metric]
        if named:
            return min(named, key=_metric_rank)
    return min(common, key=_metric_rank)


def _metric_rank(name: str) -> tuple[int, str]:
    """Headline metrics first (in HEADLINE order), then by name."""
    metric = name.rsplit(":", 1)[-1]
    return (HEADLINE.index(metric) if metric in HEADLINE else len(HEADLINE), name)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plots(report: Report) -> dict[str, bytes]:
    """PNG bytes by file name: latency distributions and the Pareto chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, bytes] = {}
    cell = report.latency_cell
    if cell:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        samples = [
            e.latency[cell].get("samples_ms", [e.latency[cell]["median_ms"]]) for e in report.artifacts
        ]
        ax.boxplot(samples, showfliers=True)
        ax.set_xticks(range(1, len(samples) + 1), [_short(e.name) for e in report.artifacts], rotation=30)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"Latency distribution ({cell})")
        images["latency.png"] = _png(fig)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [e.latency[cell]["median_ms"] for e in report.artifacts]
        ys = [_quality(e, report.primary_metric) for e in report.artifacts]
        sizes = [e.size_mb for e in report.artifacts]
        ax.scatter(xs, ys, s=[30 + 4 * s for s in sizes], alpha=0.6)
        for e, x, y, s in zip(report.artifacts, xs, ys, sizes, strict=True):
            ax.annotate(
                f"{_short(e.name)} ({s:.1f} MB)",
                (x, y),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        front = _pareto(xs, ys)
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "r--", linewidth=1, label="Pareto front")
        ax.set_xlabel(f"median latency (ms, {cell})")
        ax.set_ylabel(report.primary_metric or "embedding cosine vs fp32")
        ax.set_title("Accuracy vs latency (marker area ~ size)")
        ax.legend()
        images["pareto.png"] = _png(fig)
        plt.close(fig)
    return images


def _short(name: str) -> str:
    """'recipe/step:precision' -> 'step:precision' (the recipe is the same for every point)."""
    return name.split("/", 1)[-1]


def _quality(entry: Entry, metric: str | None) -> float:
    if metric:
        return entry.metrics[metric]
    for output in ("sentence_embedding", "logits"):
        if output in entry.fidelity:
            return entry.fidelity[output].get(
                "cosine_mean", entry.fidelity[output].get("top1_agreement", 1.0)
            )
    return 1.0


def _pareto(xs: list[float], ys: list[float]) -> list[int]:
    """Indices not dominated (lower latency and higher quality), sorted by latency."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], float("-inf")
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def markdown(report: Report) -> str:
    """report.md: every artifact (with its whole chain), then ratios to the teacher when a recipe
    measured its baselines beside the result."""
    lines = ["# edgeslim report", "", f"created {report.created}", "", *_table(report)]
    lines += _versus(report)
    for e in report.artifacts:
        for output, figures in e.fidelity.items():
            lines.append(
                f"\n{e.name} fidelity vs fp32 ({output}): "
                + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
            )
        if e.gate:
            lines.append(
                f"\n{e.name} gate: "
                + ", ".join(f"{g['budget']} {'pass' if g['passed'] else 'FAIL'}" for g in e.gate)
            )
    lines += ["", *[f"![{name}]({name})" for name in report.plots]]
    return "\n".join(lines) + "\n"


# Roles a recipe's report gives its artifacts (steps/report.py, pipeline._report_context).
RESULT, RESULT_FP32 = "result", "result fp32"
TEACHER_FP32, TEACHER_INT8 = "teacher fp32", "teacher int8"


def by_role(report: Report, role: str) -> Entry | None:
    """The first artifact with `role`, or None."""
    return next((e for e in report.artifacts if e.role == role), None)


def subject(report: Report) -> Entry:
    """The artifact the report is about: its recipe's result, else the first one."""
    return by_role(report, RESULT) or report.artifacts[0]


def references(report: Report) -> list[tuple[str, Entry]]:
    """(label, artifact) to compare the result with: the teacher's int8 and fp32, or, in a recipe
    without model steps, the result's own fp32."""
    found = [(role, by_role(report, role)) for role in (TEACHER_INT8, TEACHER_FP32)]
    pairs = [(role, e) for role, e in found if e is not None]
    fp32 = by_role(report, RESULT_FP32)
    return pairs or ([("fp32", fp32)] if fp32 is not None else [])


def cells(report: Report) -> list[str]:
    """Latency cells every artifact has, ordered by batch, sequence, then threads (t1 before t2)."""
    shared = set.intersection(*(set(e.latency) for e in report.artifacts)) if report.artifacts else set()

    def order(cell: str) -> tuple[int, ...]:
        numbers = [int(x) for x in re.findall(r"\d+", cell)]
        return (*numbers[1:], numbers[0]) if len(numbers) == 3 else (0,)

    return sorted(shared, key=order)


def latency_ratio(entry: Entry, reference: Entry, cell: str) -> tuple[float, float | None, float | None]:
    """entry's median latency / reference's at `cell`, with a bootstrap 95% CI from the stored
    samples (None without samples)."""
    a, b = entry.latency[cell], reference.latency[cell]
    if len(a.get("samples_ms", [])) > 1 and len(b.get("samples_ms", [])) > 1:
        import numpy as np

        from edgeslim.bench import ratio_ci

        ratio, low, high = ratio_ci(np.asarray(a["samples_ms"]), np.asarray(b["samples_ms"]))
        return ratio, low, high
    return float(a["median_ms"]) / float(b["median_ms"]), None, None


def ratio_text(value: tuple[float, float | None, float | None]) -> str:
    ratio, low, high = value
    return f"{ratio:.2f}x" + (f" (95% CI {low:.2f}-{high:.2f})" if low is not None else "")


def _cell(text: str) -> str:
    """`text` as one Markdown table cell: the characters Markdown would read as table or inline
    syntax are backslash-escaped (an artifact folder may be named a*b or p|q)."""
    return "".join(f"\\{c}" if c in "\\|*_`[]<>#" else c for c in text)


def _table(report: Report) -> list[str]:
    """One row per artifact: role, chain, size, parameters, metric, median ms per shared cell."""
    roles = any(e.role for e in report.artifacts)
    shared = cells(report)
    head = ["artifact", *(["role"] if roles else []), "steps", "size MB", "params"]
    head += [_cell(report.primary_metric)] if report.primary_metric else []
    head += [f"median ms ({cell})" for cell in shared]
    if report.latency_cell:
        head.append(f"p90 ms ({report.latency_cell})")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in report.artifacts:
        row = [_cell(e.name), *([_cell(e.role or "")] if roles else []), _cell(" → ".join(e.steps))]
        row.append(f"{e.size_mb:.2f}")
        row.append(f"{e.parameters:,}")
        row += [f"{e.metrics[report.primary_metric]:.4f}"] if report.primary_metric else []
        row += [f"{e.latency[cell]['median_ms']:.2f}" for cell in shared]
        if report.latency_cell:
            row.append(f"{e.latency[report.latency_cell]['p90_ms']:.2f}")
        rows.append("| " + " | ".join(row) + " |")
    return rows


def _versus(report: Report) -> list[str]:
    """Size and latency ratios (95% CI from the samples) and metric differences to the teacher."""
    refs = references(report)
    if not refs:
        return []
    shared, metric = cells(report), report.primary_metric
    head = ["artifact", *(f"size / {label}" for label, _ in refs)]
    head += [f"latency {cell} / {label}" for cell in shared for label, _ in refs]
    head += [f"{_cell(metric)} − {label}" for label, _ in refs] if metric else []
    rows = ["", f"## Side by side with the {refs[0][0].split()[0]}", ""]
    rows += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in report.artifacts:
        row = [_cell(e.name), *(f"{e.size_mb / ref.size_mb:.2f}x" for _, ref in refs)]
        row += [ratio_text(latency_ratio(e, ref, c)) for c in shared for _, ref in refs]
        if metric:
            row += [f"{e.metrics[metric] - ref.metrics[metric]:+.4f}" for _, ref in refs]
        rows.append("| " + " | ".join(row) + " |")
    return rows


def to_html(report: Report, images: dict[str, bytes]) -> str:
    """report.md rendered as one self-contained page (markdown-it-py, which rich already brings:
    CommonMark plus tables); its image links point at the PNGs embedded as data URIs. A script
    marks whether the images decoded."""
    from markdown_it import MarkdownIt

    text = markdown(report)
    for name, data in images.items():
        text = text.replace(f"]({name})", f"](data:image/png;base64,{base64.b64encode(data).decode()})")
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgeslim report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ccc;padding:4px 8px}}img{{max-width:100%;display:block}}</style>
</head><body>
{body}
<script>window.addEventListener("load",function(){{var i=document.images,ok=i.length>0;
for(var k=0;k<i.length;k++){{ok=ok&&i[k].complete&&i[k].naturalWidth>0;}}
document.body.setAttribute("data-images-ok",ok?"yes":"no");}});</script></body></html>
"""


def write(report: Report, out: Path) -> None:
    """report.json, report.md, report.html and the PNGs into the (staging) directory `out`."""
    images = plots(report)
    report = report.model_copy(update={"plots": list(images)})
    for name, data in images.items():
        (out / name).write_bytes(data)
    artifacts.write_json(out / "report.json", report.model_dump(mode="json", by_alias=True))
    (out / "report.md").write_text(markdown(report))
    (out / "report.html").write_text(to_html(report, images))
