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
    announce    optional: summary -> None, run when the summary is shown (the gate's GitHub
                step summary)
    command     the typer command function for the CLI: one option per Config field
                (options.field_option), builds the Config, calls run_single; --dry-run
                prints the Config as a recipe step instead

Adding a step = one new file, one line in STEPS and its Config in recipe.Step (the
tagged union a recipe's steps are; tests/test_recipe.py checks the two agree). Modules import
torch, transformers and onnxruntime only inside functions, so loading the registry stays cheap.
"""

from __future__ import annotations

import importlib
import time
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeslim.config import StepConfig

# Step type (its Config's `type`, also the CLI command) -> its module here, in registry order.
# Written out so that the CLI can list the commands without importing any step (a fast --help).
STEPS: dict[str, str] = {
    "finetune": "finetune",
    "distill": "distill",
    "shapes": "shapes",
    "prune": "prune",
    "simplify": "simplify",
    "qat": "qat",
    "binarize": "binarize",
    "export": "export",
    "optimize": "optimize",
    "quantize": "quantize",
    "eval": "evaluate",
    "bench": "benchmark",
    "gate": "gate",
    "report": "report",
    "inspect": "inspect",
}


def module(step_type: str) -> ModuleType:
    """The module of one step type (imports that step only)."""
    loaded = importlib.import_module(f"edgeslim.steps.{STEPS[step_type]}")
    declared = loaded.Config.model_fields["type"].default
    if declared != step_type:
        raise RuntimeError(
            f"edgeslim.steps.{STEPS[step_type]}: Config.type is {declared!r}, not {step_type!r}"
        )
    return loaded


@cache
def modules() -> dict[str, ModuleType]:
    """Step type -> module, in registry order (imports every step)."""
    return {step_type: module(step_type) for step_type in STEPS}


def command_help(step_type: str) -> str:
    """The docstring of a step's `command`, read from its source without importing or parsing
    it (a regular expression: ast would cost ~60 ms of --help; tests/test_cli.py checks that
    this equals the imported docstring for every step)."""
    import inspect
    import re

    text = Path(__file__).with_name(f"{STEPS[step_type]}.py").read_text(encoding="utf-8")
    found = re.search(r'^def command\(.*?\) -> None:\n    """(.*?)"""', text, re.DOTALL | re.MULTILINE)
    return inspect.cleandoc(found.group(1)) if found else ""


def as_recipe_step(cfg: StepConfig) -> str:
    """`cfg` as the recipe step that runs it (YAML, a one-item list to paste under `steps:`)."""
    import yaml

    return str(yaml.safe_dump([cfg.model_dump(mode="json")], sort_keys=False, default_flow_style=None))


def run_single(
    src: str | Path, cfg: StepConfig, out: Path, force: bool, dry_run: bool = False
) -> dict[str, Any]:
    """Run one step from `src` into `out` (written atomically) and print its summary; with
    `dry_run`, print the recipe step instead and touch nothing."""
    from edgeslim import artifacts
    from edgeslim.errors import BudgetNotMet

    if dry_run:
        print(as_recipe_step(cfg), end="")
        return {}
    step = module(cfg.type)
    if not cfg.takes_model:
        artifacts.read_manifest(Path(src))  # fail early on a non-artifact
    start = time.perf_counter()
    with artifacts.staging(out, force, resumable=cfg.resumable) as tmp:
        result: dict[str, Any] = step.run(src, cfg, tmp)
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
    from edgeslim import ui

    step = module(step_type)
    detail = getattr(step, "DETAIL", ())
    ui.summary(title, {k: v for k, v in summary.items() if k not in detail})
    render = getattr(step, "render", None)
    if render is not None:
        ui.text(render(summary))
    announce = getattr(step, "announce", None)  # e.g. the gate's GitHub step summary
    if announce is not None:
        announce(summary)
