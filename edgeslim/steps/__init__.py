"""Step registry. A step is one module here with:

    Config      a frozen pydantic model whose `type` field is the step's name
    run(src, config, out) -> dict
                writes the step's artifact into the (staging) directory `out` and returns
                a summary (JSON-able; stored with a recipe's cache entry); `src` is the previous
                artifact directory, or the model name/path for steps whose Config has
                `takes_model = True`. Steps print nothing: run_single and the recipe runner
                show the summary (present); progress notes go to stderr through ui.note
    render      optional: summary -> text shown under the summary lines (e.g. the gate's
                table); the summary keys it shows are listed in DETAIL and not repeated
    command     the typer command function for the CLI: one option per Config field
                (options.field_option), builds the Config, calls run_single; --dry-run
                prints the Config as a recipe step instead

Adding a step = one new file, one line in STEP_MODULES and its Config in recipe.Step (the
tagged union a recipe's steps are; tests/test_recipe.py checks the two agree). Modules import
torch, transformers and onnxruntime only inside functions, so loading the registry stays cheap.
"""

from __future__ import annotations

import importlib
import time
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeslim import artifacts, ui
from edgeslim.config import StepConfig
from edgeslim.errors import BudgetNotMet

STEP_MODULES: tuple[str, ...] = (
    "finetune",
    "distill",
    "shapes",
    "prune",
    "simplify",
    "export",
    "optimize",
    "quantize",
    "evaluate",
    "benchmark",
    "gate",
    "report",
    "inspect",
)


@cache
def modules() -> dict[str, ModuleType]:
    """Step type (its Config's `type`, also the CLI command) -> module, in registry order."""
    loaded = [importlib.import_module(f"edgeslim.steps.{name}") for name in STEP_MODULES]
    return {module.Config.model_fields["type"].default: module for module in loaded}


def as_recipe_step(cfg: StepConfig) -> str:
    """`cfg` as the recipe step that runs it (YAML, a one-item list to paste under `steps:`)."""
    import yaml

    return str(yaml.safe_dump([cfg.model_dump(mode="json")], sort_keys=False, default_flow_style=None))


def run_single(
    src: str | Path, cfg: StepConfig, out: Path, force: bool, dry_run: bool = False
) -> dict[str, Any]:
    """Run one step from `src` into `out` (written atomically) and print its summary; with
    `dry_run`, print the recipe step instead and touch nothing."""
    if dry_run:
        print(as_recipe_step(cfg), end="")
        return {}
    module = modules()[cfg.type]
    if not cfg.takes_model:
        artifacts.read_manifest(Path(src))  # fail early on a non-artifact
    start = time.perf_counter()
    with artifacts.staging(out, force, resumable=cfg.resumable) as tmp:
        result: dict[str, Any] = module.run(src, cfg, tmp)
    result["wall_s"] = round(time.perf_counter() - start, 2)
    if not artifacts.is_main_process():  # a non-zero rank of a distributed run
        return result
    present(cfg.type, f"{cfg.type}: wrote {out}", result)
    if result.get("budget_not_met"):  # the artifact is written; the exit code says it failed
        raise BudgetNotMet(f"{result['budget_not_met']} ({out})")
    return result


def present(step_type: str, title: str, summary: dict[str, Any]) -> None:
    """Print a step's summary on stdout: `key: value` lines, then what its `render` makes of
    the keys listed in its DETAIL (a table, say)."""
    module = modules()[step_type]
    detail = getattr(module, "DETAIL", ())
    ui.summary(title, {k: v for k, v in summary.items() if k not in detail})
    render = getattr(module, "render", None)
    if render is not None:
        ui.text(render(summary))
