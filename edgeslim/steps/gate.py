"""gate: check an artifact against budgets; exit 0 when all pass, 6 when any fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from pydantic import Field

from edgeslim import artifacts, gate
from edgeslim.config import StepConfig
from edgeslim.errors import BudgetNotMet
from edgeslim.flags import ArtifactArg, DryRun, Json
from edgeslim.options import field_option


class Config(StepConfig):
    """The budgets, inline (recipe) or from a file."""

    type: Literal["gate"] = "gate"
    host_dependent: ClassVar[bool] = True  # its result depends on the CPU it runs on
    budgets: gate.Budgets | None = Field(None, description="Budgets inline.")
    budgets_file: Path | None = Field(None, description="Budgets YAML file.")


def _budgets(cfg: Config) -> gate.Budgets:
    from edgeslim.errors import InputError

    if (cfg.budgets is None) == (cfg.budgets_file is None):
        raise InputError("gate needs exactly one of budgets (inline) or budgets_file")
    return cfg.budgets if cfg.budgets is not None else gate.load(cfg.budgets_file)  # type: ignore[arg-type]


def publish(rows: list[dict[str, Any]], junit: Path | None) -> str:
    """Write JUnit XML when asked and the GitHub step summary when in a GitHub job; return the table."""
    text = gate.table(rows)
    if junit:
        gate.junit(rows, junit)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write("## edgeslim gate\n\n" + text + "\n")
    return text


def announce(summary: dict[str, Any]) -> None:
    """In a recipe: the GitHub step summary, written when the runner shows the result (fresh
    or reused from the cache), like the table (steps.present)."""
    publish(summary.get("budgets", []), None)


def _failed(rows: list[dict[str, Any]]) -> str:
    names = [r["budget"] for r in rows if not r["passed"]]
    return f"{len(names)} budget(s) failed: {', '.join(names)}" if names else ""


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Carry `src` into `out` with gate.json; a failed budget fails the recipe after writing."""
    rows = gate.check(src, _budgets(cfg))
    artifacts.copy_companions(src, out, skip_model=False)
    artifacts.write_json(out / "gate.json", {"passed": all(r["passed"] for r in rows), "budgets": rows})
    manifest = artifacts.read_manifest(src)
    step = {"type": "gate", "config": cfg.model_dump(mode="json"), "budgets": rows}
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    summary: dict[str, Any] = {
        "passed": sum(r["passed"] for r in rows),
        "failed": sum(not r["passed"] for r in rows),
        "budgets": rows,
    }
    if _failed(rows):
        summary["budget_not_met"] = _failed(rows)
    return summary


# The summary's budget rows are shown as the table (steps.present), not as a key: value line.
DETAIL = ("budgets",)


def render(summary: dict[str, Any]) -> str:
    """The budgets table of a gate step's summary."""
    return gate.table(summary.get("budgets", []))


def command(
    artifact: ArtifactArg,
    budgets_file: Annotated[Path, field_option(Config, "budgets_file", "--budgets")],
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML here (missing folders are created).")
    ] = None,
    json_out: Json = False,
    dry_run: DryRun = False,
) -> None:
    """Verify an artifact, then check it against size, latency, accuracy and fusion budgets
    (exit 3 when it fails verification, 6 when a budget fails)."""
    import json

    from edgeslim import verify
    from edgeslim.config import make_config
    from edgeslim.steps import as_recipe_step

    cfg = make_config(Config, budgets_file=budgets_file)
    if dry_run:
        print(as_recipe_step(cfg), end="")
        return
    loaded = _budgets(cfg)
    if junit:
        verify.writable_file(junit)  # before any work, not after minutes of measuring
    rows = gate.check(artifact, loaded)
    text = publish(rows, junit)
    print(
        json.dumps({"passed": all(r["passed"] for r in rows), "budgets": rows}, indent=2)
        if json_out
        else text
    )
    if _failed(rows):
        raise BudgetNotMet(_failed(rows))
