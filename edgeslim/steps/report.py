"""report: report.json / report.md / report.html with plots, over one or more artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field

from edgeslim import artifacts
from edgeslim.config import StepConfig
from edgeslim.defaults import QUICK_BOOTSTRAP, QUICK_RUNS, QUICK_WARMUP
from edgeslim.errors import InputError
from edgeslim.flags import DryRun, Force, Output
from edgeslim.options import field_option


class Config(StepConfig):
    """What goes into the report besides the artifact itself."""

    type: Literal["report"] = "report"
    compare: tuple[Path, ...] = Field((), description="Other artifacts to put beside it.")
    bench_files: tuple[Path, ...] = Field((), description="'edgeslim bench --out' files to merge.")
    data: str | None = Field(None, description="Evaluate every artifact on this dataset first.")
    limit: int | None = Field(None, gt=0, description="Evaluate the first N examples only.")
    measure: bool = Field(True, description="Bench (t1 b1 s128) artifacts that have no latency yet.")
    runs: int = Field(QUICK_RUNS, ge=10, description="Runs per artifact when measuring.")
    metric: str | None = Field(
        None,
        min_length=1,
        description="The headline metric, e.g. accuracy or sst2:dev:accuracy (default: the one the "
        "recipe's gate checks, else the first metric of the subject's first eval step).",
    )
    baselines: bool = Field(
        True,
        description="In a recipe: measure the result side by side with the teacher's fp32 and plain int8, "
        "each intermediate model (fp32 and int8) and its own fp32 (size, latency, the eval steps' metrics).",
    )


class Beside(BaseModel):
    """An artifact a recipe's report measures beside its result (a baseline or an intermediate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="recipe/step[:precision], e.g. sst2-student-int8/distill:int8.")
    role: str = Field(description="teacher fp32, teacher int8, intermediate fp32, ..., result fp32.")
    path: Path = Field(description="Its artifact directory (a recipe cache entry).")


def _bench_cells(files: tuple[Path, ...]) -> dict[str, list[dict[str, Any]]]:
    from edgeslim import bench

    cells: dict[str, list[dict[str, Any]]] = {}
    for file in files:
        try:
            result = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"bench file {file} cannot be read ({exc})") from None
        if result.get("schema") != bench.SCHEMA:
            raise InputError(f"{file} has schema {result.get('schema')!r}, expected {bench.SCHEMA!r}")
        for cell in result["cells"]:
            cells.setdefault(cell["model"], []).append(cell)
    return cells


def build(
    paths: list[Path],
    cfg: Config,
    name: str | None = None,
    beside: tuple[Beside, ...] = (),
    headline: str | None = None,
) -> Any:
    """The Report over `paths` (artifact directories; the first one is named `name` when given),
    with `beside` first (a recipe's baselines): then every artifact is measured side by side on
    the bench grid of the first one's bench step and evaluated like its eval steps. The headline
    metric is cfg.metric, else `headline` (a recipe's gate metric), else the subject's eval's."""
    from edgeslim import report
    from edgeslim.environment import snapshot

    listed: list[tuple[str, str | None, Path]] = [(b.name, b.role, b.path) for b in beside]
    listed.append((name or paths[0].name, "result" if name or beside else None, paths[0]))
    listed += [(p.name, None, p) for p in paths[1:]]
    for _, _, path in listed:
        artifacts.read_manifest(path)
    if beside:
        cells = _side_by_side({n: p for n, _, p in listed}, paths[0], cfg)
    else:
        cells = _cells({n: p for n, _, p in listed}, cfg)
    entries = [report.entry(p, cells.get(n, []), name=n, role=r) for n, r, p in listed]
    evals = _eval_configs(paths[0]) if beside else []
    entries = [_with_metrics(e, evals) if e.role not in (None, "result") else e for e in entries]
    if cfg.data:
        from edgeslim.steps.evaluate import Config as EvalConfig

        extra = EvalConfig(data=cfg.data, limit=cfg.limit, bootstrap=QUICK_BOOTSTRAP)
        entries = [_with_metrics(e, [extra]) for e in entries]
    built = report.build(entries, snapshot(), (cfg.metric, headline, eval_headline(paths[0])))
    if cfg.metric and not _names(built.primary_metric, cfg.metric):
        shared = set.intersection(*(set(e.metrics) for e in entries))
        raise InputError(
            f"metric '{cfg.metric}' is not reported for every artifact; shared: "
            + (", ".join(sorted(shared)) or "none (add an eval step or --data)")
        )
    return built


def _names(chosen: str | None, asked: str) -> bool:
    """Whether `chosen` is what --metric asked for: that data:metric exactly, or (a bare metric
    name) that metric on any data."""
    if chosen is None:
        return False
    return chosen == asked if ":" in asked else chosen.rsplit(":", 1)[-1] == asked


def eval_headline(subject: Path) -> str | None:
    """data:metric of the first metric the subject's first eval step reported, or None."""
    manifest = artifacts.read_manifest(subject)
    first = next((s for s in manifest["steps"] if s["type"] == "eval"), None)
    if first is None:
        return None
    metrics = first.get("result", {}).get("metrics", {})
    return f"{first['config']['data']}:{next(iter(metrics))}" if metrics else None


def _cells(models: dict[str, Path], cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Bench cells by artifact name: from --bench files, then what bench steps recorded, then
    (cfg.measure) measured at t1 b1 s128 for the rest."""
    from edgeslim import bench

    cells = _bench_cells(cfg.bench_files)
    for name, path in models.items():  # cells a bench step already recorded in the manifest
        recorded = artifacts.read_manifest(path).get("metrics", {}).get("bench", [])
        if recorded and name not in cells:
            cells[name] = recorded
    missing = {n: p / artifacts.MODEL for n, p in models.items() if n not in cells}
    if cfg.measure and missing:
        seq = min(128, bench.max_length(missing) or 128)
        measured = bench.run_grid(missing, "cpu", [1], [1], [seq], cfg.runs, QUICK_WARMUP, 0.0)
        for cell in measured["cells"]:
            cells.setdefault(cell["model"], []).append(cell)
    return cells


def _side_by_side(models: dict[str, Path], subject: Path, cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Every model measured interleaved, on the grid of `subject`'s last bench step (its EP,
    threads, batches, sequence lengths and warmup; cfg.runs runs), else t1 b1 s<=128."""
    from edgeslim import bench

    files = {n: p / artifacts.MODEL for n, p in models.items()}
    grid = next(
        (s["config"] for s in reversed(artifacts.read_manifest(subject)["steps"]) if s["type"] == "bench"),
        None,
    )
    if grid is None:
        grid = {"threads": [1], "batch": [1], "seq": [min(128, bench.max_length(files) or 128)]}
    measured = bench.run_grid(
        files,
        grid.get("ep", "cpu"),
        list(grid["threads"]),
        list(grid["batch"]),
        list(grid["seq"]),
        cfg.runs,
        int(grid.get("warmup", QUICK_WARMUP)),
        0.0,
        bool(grid.get("allow_fallback", False)),
    )
    cells: dict[str, list[dict[str, Any]]] = {}
    for cell in measured["cells"]:
        cells.setdefault(cell["model"], []).append(cell)
    return cells


def _eval_configs(subject: Path) -> list[Any]:
    """The configs of `subject`'s eval steps (fidelity references dropped: metrics only)."""
    from edgeslim.steps.evaluate import Config as EvalConfig

    return [
        EvalConfig.model_validate({**s["config"], "reference": None})
        for s in artifacts.read_manifest(subject)["steps"]
        if s["type"] == "eval"
    ]


def _with_metrics(entry: Any, configs: list[Any]) -> Any:
    """`entry` with each eval config's metrics (as data:metric) added."""
    from edgeslim.steps.evaluate import evaluate

    metrics = dict(entry.metrics)
    for config in configs:
        result = evaluate(Path(entry.path), config, reuse=True)
        metrics.update({f"{config.data}:{k}": v["value"] for k, v in result["metrics"].items()})
    return entry.model_copy(update={"metrics": metrics})


def run(
    src: Path,
    cfg: Config,
    out: Path,
    name: str | None = None,
    beside: tuple[Beside, ...] = (),
    headline: str | None = None,
) -> dict[str, Any]:
    """Carry `src` into `out` with the report files (the recipe's closing step); a recipe run
    names the result `name`, passes its baselines in `beside` and its gate's metric in
    `headline` (see pipeline.plan)."""
    from edgeslim import report

    built = build([src, *cfg.compare], cfg, name, beside if cfg.baselines else (), headline)
    artifacts.copy_companions(src, out, skip_model=False)
    report.write(built, out)
    manifest = artifacts.read_manifest(src)
    step = {
        "type": "report",
        "config": cfg.model_dump(mode="json"),
        "files": ["report.json", "report.md", "report.html"],
        "compared": [{"name": e.name, "role": e.role, "path": e.path} for e in built.artifacts],
    }
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    return {
        "report": "report.md, report.html",
        "primary metric": built.primary_metric or "none shared",
        "artifacts": len(built.artifacts),
        "plots": ", ".join(report.read(out / "report.json").plots),
    }


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    paths: Annotated[
        list[Path], typer.Argument(help="Artifact directories: the subject, then those to compare with it.")
    ],
    output: Output,
    bench_files: Annotated[list[Path] | None, _option("bench_files", "--bench")] = None,
    data: Annotated[str | None, _option("data")] = None,
    limit: Annotated[int | None, _option("limit")] = None,
    measure: Annotated[bool | None, _option("measure")] = None,
    runs: Annotated[int | None, _option("runs")] = None,
    metric: Annotated[str | None, _option("metric")] = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Write report.json, report.md and a self-contained report.html with plots."""
    from edgeslim import report, ui
    from edgeslim.config import make_config
    from edgeslim.steps import as_recipe_step

    cfg = make_config(
        Config,
        compare=tuple(paths[1:]) or None,
        bench_files=tuple(bench_files) if bench_files else None,
        data=data,
        limit=limit,
        measure=measure,
        runs=runs,
        metric=metric,
    )
    if dry_run:
        print(as_recipe_step(cfg), end="")
        return
    built = build([paths[0], *cfg.compare], cfg)
    with artifacts.staging(output, force) as tmp:
        report.write(built, tmp)
    ui.summary(
        f"report: wrote {output}",
        {
            "files": "report.json, report.md, report.html",
            "primary metric": built.primary_metric or "none shared",
        },
    )
