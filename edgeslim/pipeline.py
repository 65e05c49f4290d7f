"""Run one step (CLI) or a recipe (cached steps, reused when config and input are unchanged)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from edgeslim import artifacts, fingerprint, locking, models, steps, ui
from edgeslim.errors import BudgetNotMet, EdgeslimError, OutputError
from edgeslim.recipe import Recipe, step_reference

CACHE_DIR = ".edgeslim-cache"
STEP_SUMMARY = ".step-summary.json"


def run_single(src: str | Path, cfg: steps.StepConfig, out: Path, force: bool) -> dict[str, Any]:
    """Run one step from `src` into `out` (written atomically) and print its summary."""
    module = steps.modules()[cfg.type]  # type: ignore[attr-defined]
    if not cfg.takes_model:
        artifacts.read_manifest(Path(src))  # fail early on a non-artifact
    start = time.perf_counter()
    with artifacts.staging(out, force, resumable=cfg.resumable) as tmp:
        result: dict[str, Any] = module.run(src, cfg, tmp)
    result["wall_s"] = round(time.perf_counter() - start, 2)
    if not artifacts.is_main_process():  # a non-zero rank of a distributed run
        return result
    ui.summary(f"{cfg.type}: wrote {out}", result)  # type: ignore[attr-defined]
    if result.get("budget_not_met"):  # the artifact is written; the exit code says it failed
        raise BudgetNotMet(f"{result['budget_not_met']} ({out})")
    return result


def _key(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan(recipe: Recipe, cache: Path) -> list[dict[str, Any]]:
    """Each step's cache key and directory.

    A key covers the step's config, its input (the model folder's contents for the first step,
    the previous step's key after that), the contents of every file, folder and dataset the
    config names (fingerprint.inputs), edgeslim's code and the library versions, and, for steps
    whose result depends on the CPU (bench, gate, quantize), the host's CPU facts.
    """
    path = models.resolve(recipe.model)
    models.read_config(path)  # unsupported architectures fail before any work
    previous = fingerprint.sha256_tree(path)  # weights, config and tokenizer files
    environment, host = fingerprint.environment(), fingerprint.host()
    rows: list[dict[str, Any]] = []
    for index, step in enumerate(recipe.steps):
        inputs = fingerprint.inputs(step, getattr(step, "data_dir", None))
        number = step_reference(getattr(step, "recover_with", None))
        if number is not None:  # "@N": step N's output, identified by its key
            inputs[f"@{number}"] = rows[number - 1]["key"]
        parts = {
            "type": step.type,  # type: ignore[attr-defined]
            "config": step.model_dump(mode="json"),
            "previous": previous,
            "inputs": inputs,
            "environment": environment,
            "host": host if step.host_dependent else None,
        }
        previous = _key(parts)
        directory = cache / f"{index + 1:02d}-{step.type}-{previous}"  # type: ignore[attr-defined]
        rows.append(
            {
                "step": step,
                "key": previous,
                "dir": directory,
                "inputs": inputs,
                "cached": cached_summary(directory) is not None,  # written only when the step succeeded
            }
        )
    return rows


def _owned_by(out: Path, recipe: Recipe) -> bool:
    """True when `out` is an earlier output of this same recipe (safe to replace)."""
    try:
        if (out / "edgeslim-recipe.json").exists():  # a recipe that ends in a model step
            record = json.loads((out / "edgeslim-recipe.json").read_text())
        else:
            record = artifacts.read_manifest(out).get("recipe")
    except (OSError, ValueError, EdgeslimError):
        return False
    return isinstance(record, dict) and record.get("name") == recipe.name


def run_recipe(recipe: Recipe, output: Path | None, force: bool, dry_run: bool) -> dict[str, Any]:
    """Execute (or, with dry_run, print) the recipe; returns the run record."""
    out = output or recipe.output
    cache = out.parent / CACHE_DIR
    rows = plan(recipe, cache)
    if dry_run:
        ui.summary(
            f"plan for {recipe.name} -> {out}",
            {
                f"{i + 1}. {r['step'].type}": ("cached" if r["cached"] else "to run")
                + f" {r['step'].model_dump(exclude_defaults=True) or ''} [{r['key']}]"
                for i, r in enumerate(rows)
            },
        )
        return {"plan": [{"type": r["step"].type, "key": r["key"], "cached": r["cached"]} for r in rows]}
    if out.exists() and not force and not _owned_by(out, recipe):
        raise OutputError(
            f"{out} exists and was not made by recipe '{recipe.name}': choose another output or pass --force"
        )
    with contextlib.ExitStack() as held:
        if artifacts.is_main_process():
            held.enter_context(locking.hold(out))
        return _execute(recipe, rows, out, held)


def cached_summary(directory: Path) -> dict[str, Any] | None:
    """The summary of a finished cache entry, or None (absent or unreadable: run it again)."""
    try:
        summary = json.loads((directory / STEP_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _execute(
    recipe: Recipe, rows: list[dict[str, Any]], out: Path, held: contextlib.ExitStack
) -> dict[str, Any]:
    """Run or reuse each planned step, then write the final artifact `out`.

    Each cache entry is locked when the run reaches it and stays locked to the end (it is the
    next step's input): another run can neither replace nor delete it meanwhile; whether it
    is cached is decided again under the lock.
    """
    start, record, src = time.perf_counter(), [], Path()
    source: str | Path = recipe.model
    failures = []
    for index, row in enumerate(rows):
        step, began = row["step"], time.perf_counter()
        label = f"[{index + 1}/{len(rows)}] {step.type}"
        if artifacts.is_main_process():
            held.enter_context(locking.hold(row["dir"]))
        cached = cached_summary(row["dir"])
        row["cached"] = cached is not None
        if cached is not None:
            ui.note(f"{label}: reused (cached in {row['dir']})")
            summary: dict[str, Any] = cached
        else:
            ui.note(f"{label}: running")
            number = step_reference(getattr(step, "recover_with", None))
            if number is not None:  # "@N": the output of step N (e.g. the fine-tuned teacher)
                step = step.model_copy(update={"recover_with": rows[number - 1]["dir"]})
            with artifacts.staging(row["dir"], force=True, resumable=step.resumable) as tmp:
                summary = steps.modules()[step.type].run(source, step, tmp)
                artifacts.write_json(tmp / STEP_SUMMARY, summary)  # a reused step reports the same
        if summary.get("budget_not_met"):  # the chain goes on; the run fails at the end
            failures.append(f"step {index + 1} ({step.type}): {summary['budget_not_met']}")
        record.append(
            {
                "type": step.type,
                "key": row["key"],
                "reused": row["cached"],
                "inputs": row["inputs"],
                "wall_s": round(time.perf_counter() - began, 2),
                **summary,
            }
        )
        source = src = row["dir"]
    run_record = {
        "name": recipe.name,
        "model": recipe.model,
        "steps": record,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    with artifacts.staging(out, force=True) as tmp:
        if (src / artifacts.MANIFEST).exists():
            artifacts.copy_companions(src, tmp, skip_model=False)
            manifest = artifacts.read_manifest(src)
            manifest["recipe"] = run_record
            artifacts.write_json(tmp / artifacts.MANIFEST, manifest)
        else:  # the chain ends in a model step: the output is that Hugging Face directory
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            artifacts.write_json(tmp / "edgeslim-recipe.json", run_record)
    result = {
        "output": str(out),
        "wall_s": round(time.perf_counter() - start, 2),
        "reused": sum(r["reused"] for r in record),
        "steps": len(record),
    }
    if (out / "inspect.md").exists():
        result["inspect_report"] = str(out / "inspect.md")
    ui.summary(f"recipe {recipe.name}: wrote {out}", result)
    if failures:
        raise BudgetNotMet("; ".join(failures) + f" (artifact written to {out})")
    return result
