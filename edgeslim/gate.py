"""Budgets (validated, unknown keys rejected) and their evaluation against an artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeslim import artifacts
from edgeslim.errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyBudget(_Strict):
    """Max p50/p95 latency at one EP/threads/batch/sequence setting."""

    ep: str = "cpu"
    threads: int = Field(1, gt=0)
    batch: int = Field(1, gt=0)
    seq: int = Field(128, gt=0)
    max_p50_ms: float | None = Field(None, gt=0)
    max_p95_ms: float | None = Field(None, gt=0)
    runs: int = Field(50, ge=10)


class MetricBudget(_Strict):
    """A minimum task metric on a dataset."""

    data: str
    metric: str
    value: float
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    limit: int | None = Field(None, gt=0)


class DropBudget(MetricBudget):
    """A maximum metric drop against a reference artifact (path relative to the budgets file)."""

    reference: Path


class BaselineBudget(_Strict):
    """Max latency regression against a stored `edgeslim bench --out` JSON, noise-aware."""

    file: Path
    max_latency_regression: float = Field(0.05, ge=0)


class Budgets(_Strict):
    """A budgets file. Sizes in MB (10^6 bytes), latencies in ms."""

    max_size_mb: float | None = Field(None, gt=0)
    max_params: int | None = Field(None, gt=0)
    latency: list[LatencyBudget] = []
    min_metric: MetricBudget | None = None
    max_drop: DropBudget | None = None
    fusion: dict[
        Literal["attention", "skip_layer_norm", "embed_layer_norm", "gelu"], Literal["full", "partial"]
    ] = {}
    baseline: BaselineBudget | None = None


def load(path: Path) -> Budgets:
    """Read and validate a budgets YAML file; relative paths resolve against its folder."""
    import yaml

    from edgeslim.recipe import make_config

    if not path.is_file():
        raise InputError(f"budgets file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"budgets file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(f"budgets file {path} must be a mapping (e.g. max_size_mb: 12)")
    budgets = make_config(Budgets, where=f"budgets {path}", **raw)
    base = path.parent
    updates: dict[str, Any] = {}
    if budgets.max_drop and not budgets.max_drop.reference.is_absolute():
        updates["max_drop"] = budgets.max_drop.model_copy(
            update={"reference": base / budgets.max_drop.reference}
        )
    if budgets.baseline and not budgets.baseline.file.is_absolute():
        updates["baseline"] = budgets.baseline.model_copy(update={"file": base / budgets.baseline.file})
    return budgets.model_copy(update=updates)


def _row(name: str, limit: str, actual: str, ok: bool, detail: str = "") -> dict[str, Any]:
    return {"budget": name, "limit": limit, "actual": actual, "passed": ok, "detail": detail}


def _metric(artifact: Path, budget: MetricBudget) -> float:
    from edgeslim.steps.evaluate import Config, evaluate

    cfg = Config(
        data=budget.data,
        text_column=budget.text_column,
        pair_column=budget.pair_column,
        label_column=budget.label_column,
        limit=budget.limit,
        bootstrap=100,
    )
    metrics = evaluate(artifact, cfg)["metrics"]
    if budget.metric not in metrics:
        raise InputError(
            f"metric '{budget.metric}' is not reported for this task; available: {', '.join(metrics)}"
        )
    return float(metrics[budget.metric]["value"])


def check(artifact: Path, budgets: Budgets) -> list[dict[str, Any]]:
    """Every budget's verdict, in file order."""
    from edgeslim import inspection

    artifacts.read_manifest(artifact)
    report = inspection.inspect(artifact)
    rows = []
    if budgets.max_size_mb is not None:
        size = report["size_bytes"] / 1e6
        rows.append(
            _row("max_size_mb", f"{budgets.max_size_mb} MB", f"{size:.2f} MB", size <= budgets.max_size_mb)
        )
    if budgets.max_params is not None:
        rows.append(
            _row(
                "max_params",
                f"{budgets.max_params:,}",
                f"{report['parameters']:,}",
                report["parameters"] <= budgets.max_params,
            )
        )
    for kind, level in budgets.fusion.items():
        got = (
            report.get("fusion", {})
            .get("kinds", {})
            .get(kind, {"status": "none", "found": 0, "expected": "?"})
        )
        ok = got["status"] in (("full", "n/a") if level == "full" else ("full", "partial", "n/a"))
        rows.append(_row(f"fusion.{kind}", level, f"{got['status']} ({got['found']}/{got['expected']})", ok))
    rows += _latency_rows(artifact, budgets)
    if budgets.min_metric:
        value = _metric(artifact, budgets.min_metric)
        rows.append(
            _row(
                f"min_metric.{budgets.min_metric.metric}",
                f">= {budgets.min_metric.value}",
                f"{value:.4f}",
                value >= budgets.min_metric.value,
                budgets.min_metric.data,
            )
        )
    if budgets.max_drop:
        artifacts.read_manifest(budgets.max_drop.reference)
        drop = _metric(budgets.max_drop.reference, budgets.max_drop) - _metric(artifact, budgets.max_drop)
        rows.append(
            _row(
                f"max_drop.{budgets.max_drop.metric}",
                f"<= {budgets.max_drop.value}",
                f"{drop:.4f}",
                drop <= budgets.max_drop.value,
                f"vs {budgets.max_drop.reference}",
            )
        )
    if budgets.baseline:
        rows += _baseline_rows(artifact, budgets.baseline)
    return rows


def _latency_rows(artifact: Path, budgets: Budgets) -> list[dict[str, Any]]:
    from edgeslim import bench

    rows = []
    for lat in budgets.latency:
        result = bench.run_grid(
            {artifact.name: artifact / artifacts.MODEL},
            lat.ep,
            [lat.threads],
            [lat.batch],
            [lat.seq],
            lat.runs,
            5,
            0.0,
        )
        cell = result["cells"][0]
        where = f"{lat.ep} t{lat.threads} b{lat.batch} s{lat.seq}"
        if lat.max_p50_ms is not None:
            rows.append(
                _row(
                    f"latency.p50 ({where})",
                    f"{lat.max_p50_ms} ms",
                    f"{cell['median_ms']:.2f} ms",
                    cell["median_ms"] <= lat.max_p50_ms,
                )
            )
        if lat.max_p95_ms is not None:
            rows.append(
                _row(
                    f"latency.p95 ({where})",
                    f"{lat.max_p95_ms} ms",
                    f"{cell['p95_ms']:.2f} ms",
                    cell["p95_ms"] <= lat.max_p95_ms,
                )
            )
    return rows


def _baseline_rows(artifact: Path, baseline: BaselineBudget) -> list[dict[str, Any]]:
    """Re-measure each baseline cell; fail only when the whole 95% CI of the ratio exceeds the slack."""
    import numpy as np

    from edgeslim import bench

    if not baseline.file.is_file():
        raise InputError(
            f"baseline {baseline.file} not found: create it with 'edgeslim bench ART --out FILE'"
        )
    try:
        stored = json.loads(baseline.file.read_text())
    except json.JSONDecodeError:
        raise InputError(f"baseline {baseline.file} is not valid JSON") from None
    if stored.get("schema") != bench.SCHEMA:
        raise InputError(
            f"baseline {baseline.file} has schema {stored.get('schema')!r}, expected {bench.SCHEMA!r}: "
            "re-create it with this edgeslim's 'bench --out'"
        )
    from edgeslim.providers import PROVIDERS

    ep = next((k for k, (name, _) in PROVIDERS.items() if name == stored.get("ep")), "cpu")
    cells = [c for c in stored["cells"] if c["model"] == stored["baseline"]]
    rows = []
    for cell in cells:
        now = bench.run_grid(
            {artifact.name: artifact / artifacts.MODEL},
            ep,
            [cell["threads"]],
            [cell["batch"]],
            [cell["seq"]],
            max(cell["runs"], 10),
            5,
            0.0,
        )["cells"][0]
        ratio, low, _ = bench.ratio_ci(np.asarray(now["samples_ms"]), np.asarray(cell["samples_ms"]))
        limit = 1 + baseline.max_latency_regression
        rows.append(
            _row(
                f"baseline latency (t{cell['threads']} b{cell['batch']} s{cell['seq']})",
                f"<= {limit:.2f}x",
                f"{ratio:.3f}x (CI low {low:.3f})",
                low <= limit,
                "fails only when the CI's lower bound is beyond the slack",
            )
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A size-limit style Markdown table."""
    lines = ["| budget | limit | actual | verdict |", "|---|---|---|---|"]
    lines += [
        f"| {r['budget']} | {r['limit']} | {r['actual']} | {'pass' if r['passed'] else '**FAIL**'} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def junit(rows: list[dict[str, Any]], path: Path) -> None:
    """JUnit XML, one testcase per budget, written atomically."""
    import xml.etree.ElementTree as ET

    failures = sum(not r["passed"] for r in rows)
    suite = ET.Element("testsuite", name="edgeslim-gate", tests=str(len(rows)), failures=str(failures))
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname="edgeslim.gate", name=r["budget"])
        if not r["passed"]:
            failure = ET.SubElement(
                case, "failure", message=f"{r['budget']}: {r['actual']} (limit {r['limit']})"
            )
            failure.text = r["detail"]
    tmp = path.with_name(f".{path.name}.tmp")
    ET.ElementTree(suite).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
