"""Budgets (validated, unknown keys rejected) and their evaluation against an artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeslim import artifacts
from edgeslim.defaults import BENCH_RUNS, BENCH_WARMUP, QUICK_BOOTSTRAP
from edgeslim.errors import InputError

# Budget numbers are strict: `true` is not 1 MB, and "12 MB" or "5ms" is refused naming the key
# (units are fixed: MB and ms). Integers are fine where a float is expected.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyBudget(_Strict):
    """Max p50/p95 latency at one EP/threads/batch/sequence setting."""

    ep: str = "cpu"
    threads: int = Field(1, gt=0, strict=True)
    batch: int = Field(1, gt=0, strict=True)
    seq: int = Field(128, gt=0, strict=True)
    max_p50_ms: float | None = Field(None, gt=0, strict=True)
    max_p95_ms: float | None = Field(None, gt=0, strict=True)
    # p50 over `versus`'s p50, both timed interleaved in the gate's own run: a budget that holds on
    # any CPU, where an absolute ceiling holds on the CPU it was set on only
    max_ratio: float | None = Field(None, gt=0, strict=True)
    versus: str | None = Field(
        None,
        description="An artifact folder (relative to the budgets file) or a role in the artifact's report",
    )
    runs: int = Field(BENCH_RUNS, ge=10, strict=True)

    @model_validator(mode="after")
    def _limits(self) -> LatencyBudget:
        if self.max_p50_ms is None and self.max_p95_ms is None and self.max_ratio is None:
            raise ValueError(
                "a latency budget needs max_p50_ms or max_p95_ms (in ms), or max_ratio with versus; "
                "it checks nothing"
            )
        if (self.max_ratio is None) != (self.versus is None):
            raise ValueError("max_ratio and versus go together: e.g. {max_ratio: 0.25, versus: teacher int8}")
        return self


class MetricBudget(_Strict):
    """A minimum task metric on a dataset."""

    data: str
    metric: str
    value: float = Field(strict=True)
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    limit: int | None = Field(None, gt=0, strict=True)


class DropBudget(MetricBudget):
    """A maximum metric drop against a reference artifact (path relative to the budgets file)."""

    reference: Path


class BaselineBudget(_Strict):
    """Max latency regression against a stored `edgeslim bench --out` JSON, noise-aware."""

    file: Path
    max_latency_regression: float = Field(0.05, ge=0, strict=True)


class Budgets(_Strict):
    """A budgets file. Sizes in MB (10^6 bytes), latencies in ms."""

    # above 10^6 MB (1 TB) the number is almost surely bytes written where MB belong
    max_size_mb: float | None = Field(None, gt=0, le=1e6, strict=True)
    max_params: int | None = Field(None, gt=0, strict=True)
    latency: list[LatencyBudget] = []
    min_metric: MetricBudget | None = None
    max_drop: DropBudget | None = None
    fusion: dict[
        Literal["attention", "skip_layer_norm", "embed_layer_norm", "gelu"], Literal["full", "partial"]
    ] = {}
    baseline: BaselineBudget | None = None

    @model_validator(mode="after")
    def _any(self) -> Budgets:
        if not any(getattr(self, name) for name in type(self).model_fields):
            raise ValueError(
                "no budget is set, so the gate would check nothing: add at least one, "
                "e.g. max_size_mb: 12 (keys: " + ", ".join(type(self).model_fields) + ")"
            )
        return self


class _Cell(BaseModel):
    """One measured cell of a stored `bench --out` result (extra keys ignored)."""

    model: str
    threads: int = Field(gt=0, strict=True)
    batch: int = Field(gt=0, strict=True)
    seq: int = Field(gt=0, strict=True)
    runs: int = Field(gt=0, strict=True)
    samples_ms: list[float] = Field(min_length=2)


class _Stored(BaseModel):
    """The parts of a stored bench result a baseline budget uses."""

    ep: str
    baseline: str
    cells: list[_Cell]


def read_baseline(path: Path) -> tuple[str, list[_Cell]]:
    """(edgeslim EP short name, the baseline model's cells) of a stored bench JSON; InputError
    naming the key when the file is not one."""
    from edgeslim import bench
    from edgeslim.config import explain
    from edgeslim.providers import PROVIDERS

    fix = "re-create it with 'edgeslim bench ART --out FILE'"
    if not path.is_file():
        raise InputError(f"baseline {path} not found: create it with 'edgeslim bench ART --out FILE'")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"baseline {path} is not valid JSON: {fix}") from None
    if not isinstance(stored, dict):
        raise InputError(f"baseline {path} is a JSON {type(stored).__name__}, not an object: {fix}")
    if stored.get("schema") != bench.SCHEMA:
        raise InputError(
            f"baseline {path} has schema {stored.get('schema')!r}, expected {bench.SCHEMA!r}: {fix}"
        )
    try:
        parsed = _Stored.model_validate(stored)
    except ValidationError as exc:
        raise InputError(f"{explain(exc, _Stored, f'baseline {path}')}: {fix}") from None
    ep = next((k for k, (name, _) in PROVIDERS.items() if name == parsed.ep), None)
    cells = [c for c in parsed.cells if c.model == parsed.baseline]
    if ep is None or not cells:
        why = f"unknown ep '{parsed.ep}'" if ep is None else f"no cell of its baseline '{parsed.baseline}'"
        raise InputError(f"baseline {path} has {why}: {fix}")
    return ep, cells


def load(path: Path) -> Budgets:
    """Read and validate a budgets YAML file; relative paths resolve against its folder."""
    import yaml

    from edgeslim.config import make_config

    if not path.is_file():
        raise InputError(f"budgets file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise InputError(f"budgets file {path} is not UTF-8 text: save it as UTF-8") from None
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
    if any(lat.versus and (base / lat.versus).is_dir() for lat in budgets.latency):
        updates["latency"] = [
            lat.model_copy(update={"versus": str(base / lat.versus)})
            if lat.versus and (base / lat.versus).is_dir()
            else lat
            for lat in budgets.latency
        ]
    return budgets.model_copy(update=updates)


def versus_model(artifact: Path, versus: str) -> Path:
    """The model a ratio budget compares with: an artifact folder, or the artifact of that role
    (or name) in `artifact`'s report.json (e.g. `teacher int8`, a report step's baseline)."""
    from edgeslim import verify

    if Path(versus).is_dir():
        verify.require(Path(versus))
        return Path(versus) / artifacts.MODEL
    report = artifact / "report.json"
    entries: list[Any] = []
    if report.is_file():
        try:
            entries = json.loads(report.read_text(encoding="utf-8")).get("artifacts", [])
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise InputError(f"{report} is not a report.json: run the report step again") from None
    found = [e for e in entries if isinstance(e, dict) and versus in (e.get("role"), e.get("name"))]
    if not found:
        roles = (
            ", ".join(sorted({str(e.get("role")) for e in entries}))
            or "none: the artifact has no report.json"
        )
        raise InputError(
            f"latency versus '{versus}' is neither an artifact folder nor a role in {report} "
            f"(roles: {roles}): run the report step first, or give an artifact folder"
        )
    if not isinstance(found[0].get("path"), str):
        raise InputError(f"{report}: '{versus}' has no path: run the report step again")
    stored = Path(found[0]["path"])  # relative to where the report ran; a recipe's cache lies beside
    for folder in (stored, artifact.parent / stored.parent.name / stored.name):
        if (folder / artifacts.MODEL).is_file():
            return folder / artifacts.MODEL
    raise InputError(
        f"latency versus '{versus}': {stored} is gone: run the recipe (or its report step) again"
    )


def _row(name: str, limit: str, actual: str, ok: bool, detail: str = "") -> dict[str, Any]:
    return {"budget": name, "limit": limit, "actual": actual, "passed": ok, "detail": detail}


def _metric(artifact: Path, budget: MetricBudget) -> float:
    from edgeslim import evaluation

    columns = (budget.text_column, budget.pair_column, budget.label_column)
    result = evaluation.evaluate_data(
        artifact, budget.data, columns, limit=budget.limit, bootstrap=QUICK_BOOTSTRAP, reuse=True
    )
    metrics = result["metrics"]
    if budget.metric not in metrics:
        raise InputError(
            f"metric '{budget.metric}' is not reported for this task; available: {', '.join(metrics)}"
        )
    return float(metrics[budget.metric]["value"])


def check(artifact: Path, budgets: Budgets) -> list[dict[str, Any]]:
    """Every budget's verdict, in file order, after verifying the artifact (exit 3 when unsound)."""
    from edgeslim import inspection, verify

    verify.require(artifact)
    if budgets.max_drop:
        verify.require(budgets.max_drop.reference)
    if budgets.baseline:  # a bad baseline file is refused before anything is measured
        read_baseline(budgets.baseline.file)
    for lat in budgets.latency:
        if lat.versus:
            versus_model(artifact, lat.versus)
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
    metric_rows = _metric_rows(artifact, budgets)  # data read, metric names checked before timing
    rows += _latency_rows(artifact, budgets)
    rows += metric_rows
    if budgets.baseline:
        rows += _baseline_rows(artifact, budgets.baseline)
    return rows


def _metric_rows(artifact: Path, budgets: Budgets) -> list[dict[str, Any]]:
    """The min_metric and max_drop verdicts (each evaluation loads and checks its data first)."""
    rows = []
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
    return rows


def _latency_rows(artifact: Path, budgets: Budgets) -> list[dict[str, Any]]:
    import numpy as np

    from edgeslim import bench

    rows = []
    for lat in budgets.latency:
        models = {artifact.name: artifact / artifacts.MODEL}
        if lat.versus:
            models["versus"] = versus_model(artifact, lat.versus)
        result = bench.run_grid(
            models, lat.ep, [lat.threads], [lat.batch], [lat.seq], lat.runs, BENCH_WARMUP, 0.0
        )
        cell = result["cells"][0]
        where = f"{lat.ep} t{lat.threads} b{lat.batch} s{lat.seq}"
        if lat.max_ratio is not None:
            other = result["cells"][1]
            ratio, low, high = bench.ratio_ci(np.asarray(cell["samples_ms"]), np.asarray(other["samples_ms"]))
            rows.append(
                _row(
                    f"latency.ratio ({where})",
                    f"<= {lat.max_ratio}x {lat.versus}",
                    f"{ratio:.3f}x (95% CI {low:.3f}-{high:.3f}; "
                    f"{cell['median_ms']:.2f} vs {other['median_ms']:.2f} ms)",
                    low <= lat.max_ratio,
                    "p50 over the other's p50, interleaved; fails only when the CI's low end is beyond it",
                )
            )
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

    ep, cells = read_baseline(baseline.file)
    rows = []
    for cell in cells:
        now = bench.run_grid(
            {artifact.name: artifact / artifacts.MODEL},
            ep,
            [cell.threads],
            [cell.batch],
            [cell.seq],
            max(cell.runs, 10),
            5,
            0.0,
        )["cells"][0]
        ratio, low, _ = bench.ratio_ci(np.asarray(now["samples_ms"]), np.asarray(cell.samples_ms))
        limit = 1 + baseline.max_latency_regression
        rows.append(
            _row(
                f"baseline latency (t{cell.threads} b{cell.batch} s{cell.seq})",
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
    """JUnit XML, one testcase per budget, written atomically (missing folders are created)."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ET.ElementTree(suite).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
