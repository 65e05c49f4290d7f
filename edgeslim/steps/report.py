"""report: report.json / report.md / report.html with plots, over one or more artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field

from edgeslim import artifacts
from edgeslim.errors import InputError
from edgeslim.options import Force, Output
from edgeslim.steps import StepConfig


class Config(StepConfig):
    """What goes into the report besides the artifact itself."""

    type: Literal["report"] = "report"
    compare: tuple[Path, ...] = Field((), description="Other artifacts to put beside it.")
    bench_files: tuple[Path, ...] = Field((), description="'edgeslim bench --out' files to merge.")
    data: str | None = Field(None, description="Evaluate every artifact on this dataset first.")
    limit: int | None = Field(None, gt=0, description="Evaluate the first N examples only.")
    measure: bool = Field(True, description="Bench (t1 b1 s128) artifacts that have no latency yet.")
    runs: int = Field(30, ge=10, description="Runs per artifact when measuring.")


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


def build(paths: list[Path], cfg: Config) -> Any:
    """The Report over `paths` (artifact directories)."""
    from edgeslim import bench, report
    from edgeslim.environment import snapshot

    for path in paths:
        artifacts.read_manifest(path)
    cells = _bench_cells(cfg.bench_files)
    for path in paths:  # cells a bench step already recorded in the manifest
        recorded = artifacts.read_manifest(path).get("metrics", {}).get("bench", [])
        if recorded and path.name not in cells:
            cells[path.name] = recorded
    missing = {p.name: p / artifacts.MODEL for p in paths if p.name not in cells}
    if cfg.measure and missing:
        seq = min(128, bench.max_length(missing) or 128)
        measured = bench.run_grid(missing, "cpu", [1], [1], [seq], cfg.runs, 3, 0.0)
        for cell in measured["cells"]:
            cells.setdefault(cell["model"], []).append(cell)
    entries = [report.entry(p, cells.get(p.name, [])) for p in paths]
    if cfg.data:
        entries = [_with_metric(e, Path(e.path), cfg) for e in entries]
    return report.build(entries, snapshot())


def _with_metric(entry: Any, path: Path, cfg: Config) -> Any:
    from edgeslim.steps.evaluate import Config as EvalConfig
    from edgeslim.steps.evaluate import evaluate

    result = evaluate(path, EvalConfig(data=cfg.data or "", limit=cfg.limit, bootstrap=100))
    metrics = {f"{cfg.data}:{k}": v["value"] for k, v in result["metrics"].items()}
    return entry.model_copy(update={"metrics": {**entry.metrics, **metrics}})


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Carry `src` into `out` with the report files (the recipe's closing step)."""
    from edgeslim import report

    built = build([src, *cfg.compare], cfg)
    artifacts.copy_companions(src, out, skip_model=False)
    report.write(built, out)
    manifest = artifacts.read_manifest(src)
    step = {
        "type": "report",
        "config": cfg.model_dump(mode="json"),
        "files": ["report.json", "report.md", "report.html"],
    }
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    return {"report": "report.md, report.html", "plots": ", ".join(report.read(out / "report.json").plots)}


def command(
    paths: Annotated[list[Path], typer.Argument(help="Artifact directories.")],
    output: Output,
    bench: Annotated[list[Path] | None, typer.Option("--bench", help="'bench --out' JSON to merge.")] = None,
    data: Annotated[str | None, typer.Option(help="Evaluate every artifact on this dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N examples.")] = None,
    measure: Annotated[bool, typer.Option(help="Bench artifacts without latency.")] = True,
    force: Force = False,
) -> None:
    """Write report.json, report.md and a self-contained report.html with plots."""
    from edgeslim import report, ui
    from edgeslim.recipe import make_config

    cfg = make_config(Config, bench_files=tuple(bench or ()), data=data, limit=limit, measure=measure)
    built = build(paths, cfg)
    with artifacts.staging(output, force) as tmp:
        report.write(built, tmp)
    ui.summary(
        f"report: wrote {output}",
        {
            "files": "report.json, report.md, report.html",
            "primary metric": built.primary_metric or "none shared",
        },
    )
