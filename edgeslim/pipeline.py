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
from edgeslim.config import StepConfig
from edgeslim.errors import BudgetNotMet, EdgeslimError, OutputError
from edgeslim.recipe import Recipe, references

CACHE_DIR = ".edgeslim-cache"
STEP_SUMMARY = ".step-summary.json"


def _key(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan(recipe: Recipe, cache: Path) -> list[dict[str, Any]]:
    """Each step's cache key and directory.

    A key covers the step's config, its input (the model folder's contents for the first step,
    the previous step's key after that), the contents of every file, folder and dataset the
    config names (fingerprint.inputs), edgeslim's code and the library versions, and, for steps
    whose result depends on the CPU (bench, gate, quantize), the host's CPU facts. A report
    step's row also carries what it compares (`context`: names and baseline cache entries),
    and its key covers that too.
    """
    path = models.resolve(recipe.model)
    models.read_config(path)  # unsupported architectures fail before any work
    origin = previous = fingerprint.sha256_tree(path)  # weights, config and tokenizer files
    environment, host = fingerprint.environment(), fingerprint.host()
    rows: list[dict[str, Any]] = []
    for index, step in enumerate(recipe.steps):
        inputs = fingerprint.inputs(step, getattr(step, "data_dir", None))
        for number in references(step).values():  # "@N": step N's output, identified by its key
            inputs[f"@{number}"] = rows[number - 1]["key"]
        parts = _parts(step, previous, inputs, environment, host)
        context = None
        if step.type == "report":
            context = _report_context(recipe, rows, origin, cache, environment, host)
            parts["context"] = {
                "name": context["name"],
                "headline": context["headline"],
                "beside": [[b["name"], b["role"], b["key"]] for b in context["beside"]],
            }
        previous = _key(parts)
        directory = cache / f"{index + 1:02d}-{step.type}-{previous}"
        rows.append(
            {
                "step": step,
                "key": previous,
                "dir": directory,
                "inputs": inputs,
                "cached": cached_summary(directory) is not None,  # written only when the step succeeded
                "context": context,
            }
        )
    return rows


def _parts(
    step: StepConfig, previous: str, inputs: dict[str, str], environment: Any, host: Any
) -> dict[str, Any]:
    """What a cache key covers (see plan)."""
    return {
        "type": step.type,
        "config": step.model_dump(mode="json"),
        "previous": previous,
        "inputs": inputs,
        "environment": environment,
        "host": host if step.host_dependent else None,
    }


def model_steps(recipe: Recipe) -> int:
    """How many steps at the start of the recipe make models (finetune, distill, prune, simplify)."""
    return next((i for i, s in enumerate(recipe.steps) if not s.produces_model), len(recipe.steps))


def label(recipe: Recipe, number: int) -> str:
    """How artifacts name step `number` (1-based; 0 is the recipe's model): its type, with @N when
    the type occurs more than once."""
    if number == 0:
        return "model"
    kind = str(recipe.steps[number - 1].type)
    repeated = sum(s.type == kind for s in recipe.steps) > 1
    return f"{kind}@{number}" if repeated else kind


def _sources(recipe: Recipe) -> list[tuple[int, str]]:
    """(step number, role) of the models rebuilt beside the result: the teacher, which is the
    input of the first model step that is not a fine-tune (0: the recipe's model), and every
    model made after it except the last (the recipe's own export of that one is compared)."""
    count = model_steps(recipe)
    kinds = [s.type for s in recipe.steps[:count]]
    teacher = next((i for i, kind in enumerate(kinds) if kind != "finetune"), count)
    return [(teacher, "teacher"), *((n, "intermediate") for n in range(teacher + 1, count))]


def _report_context(
    recipe: Recipe, rows: list[dict[str, Any]], origin: str, cache: Path, environment: Any, host: Any
) -> dict[str, Any]:
    """What a report step at position len(rows) names and compares.

    name: `recipe/step` of the step that last changed the model. beside: with baselines on,
    the teacher's fp32 and plain int8 (dynamic, default settings) and each intermediate model's,
    made with the recipe's own export and optimize configs (cache entries `bNN-TYPE-KEY`, built
    when the run reaches the report), then the recipe's last fp32 artifact when it was quantized.
    """
    from edgeslim.steps import quantize

    changes = [i for i, r in enumerate(rows) if r["step"].type in ("export", "optimize", "quantize")]
    name = f"{recipe.name}/{label(recipe, changes[-1] + 1)}" if changes else recipe.name
    report = recipe.steps[len(rows)]
    context: dict[str, Any] = {"name": name, "headline": gate_metric(recipe), "builds": [], "beside": []}
    count = model_steps(recipe)
    if not getattr(report, "baselines", False) or not changes:
        return context
    makers = [rows[count]["step"]]  # the recipe's export, then its first optimize
    makers += [r["step"] for r in rows if r["step"].type == "optimize"][:1]
    makers.append(quantize.Config(fidelity_size=64))  # plain int8; fidelity on 64 sentences
    fp32 = [i for i in changes if rows[i]["step"].type != "quantize"]
    own = rows[fp32[-1]] if fp32 and fp32[-1] != changes[-1] else None  # the result's fp32, if quantized
    own_name = f"{recipe.name}/{label(recipe, fp32[-1] + 1)}" if own else ""
    for number, role in _sources(recipe) if count else []:
        stem = f"{recipe.name}/{label(recipe, number)}"
        if number == count and own:  # the teacher is the last model: its fp32 is the recipe's own
            context["beside"].append({"name": own_name, "role": f"{role} fp32", **_where(own)})
            plain = own is rows[changes[-1] - 1] and _same_quantize(rows[changes[-1]]["step"], makers[-1])
            own = None
            if plain:  # the result is the teacher's plain int8 itself: nothing to build beside it
                continue
            fp32_row = rows[fp32[-1]]
            stages = _stages(makers[-1:], number, fp32_row["key"], fp32_row["dir"], cache, environment, host)
        else:
            previous = origin if number == 0 else rows[number - 1]["key"]
            source: str | Path = recipe.model if number == 0 else rows[number - 1]["dir"]
            stages = _stages(makers, number, previous, source, cache, environment, host)
            context["beside"].append({"name": f"{stem}:fp32", "role": f"{role} fp32", **_where(stages[-2])})
        context["builds"].append({"name": stem, "number": number, "stages": stages})
        context["beside"].append({"name": f"{stem}:int8", "role": f"{role} int8", **_where(stages[-1])})
    if own:  # the result was quantized: its fp32 goes beside it
        context["beside"].append({"name": own_name, "role": "result fp32", **_where(own)})
    return context


def gate_metric(recipe: Recipe) -> str | None:
    """data:metric that the recipe's first gate with a metric budget checks (the report's
    headline), or None; a budgets file that cannot be read is the gate step's error to report."""
    from edgeslim import gate

    for step in recipe.steps:
        if step.type != "gate" or (step.budgets is None and step.budgets_file is None):
            continue  # no budgets at all: the gate step itself says so when the run reaches it
        try:
            budgets = step.budgets or gate.load(step.budgets_file)  # type: ignore[arg-type]
        except EdgeslimError:
            return None
        named = budgets.min_metric or budgets.max_drop
        if named is not None:
            return f"{named.data}:{named.metric}"
    return None


def _same_quantize(step: Any, plain: Any) -> bool:
    """True when a recipe's quantize step makes the same model as the plain int8 baseline
    (the fidelity report's data and sample count aside: they change the report, not the model)."""
    skip = {"fidelity_data", "fidelity_size", "text_column", "pair_column", "label_column", "data_dir"}
    return bool(step.type == "quantize" and step.model_dump(exclude=skip) == plain.model_dump(exclude=skip))


def _stages(
    makers: list[Any],
    number: int,
    previous: str,
    source: str | Path,
    cache: Path,
    environment: Any,
    host: Any,
) -> list[dict[str, Any]]:
    """Cache entries `bNN-TYPE-KEY` that apply `makers` in turn to `source` (step `number`'s model)."""
    stages = []
    for maker in makers:
        inputs = fingerprint.inputs(maker, getattr(maker, "data_dir", None))
        previous = _key(_parts(maker, previous, inputs, environment, host))
        directory = cache / f"b{number:02d}-{maker.type}-{previous}"
        stages.append({"step": maker, "key": previous, "dir": directory, "inputs": inputs, "source": source})
        source = directory
    return stages


def _where(row: dict[str, Any]) -> dict[str, Any]:
    return {"key": row["key"], "dir": row["dir"]}


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
        return _print_plan(recipe, rows, out)
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


def _print_plan(recipe: Recipe, rows: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """--dry-run: each step (and a report's baseline builds), cached or to run, with its key."""
    lines: dict[str, str] = {}
    for i, r in enumerate(rows):
        config = r["step"].model_dump(exclude_defaults=True) or ""
        lines[f"{i + 1}. {r['step'].type}"] = f"{'cached' if r['cached'] else 'to run'} {config} [{r['key']}]"
        for build in (r["context"] or {}).get("builds", []):
            for stage in build["stages"]:
                state = "cached" if cached_summary(stage["dir"]) is not None else "to run"
                lines[f"{i + 1}. + {build['name']} {stage['step'].type}"] = f"{state} [{stage['key']}]"
    ui.summary(f"plan for {recipe.name} -> {out}", lines)
    return {"plan": [{"type": r["step"].type, "key": r["key"], "cached": r["cached"]} for r in rows]}


def _produce(
    entry: dict[str, Any], source: str | Path, label: str, held: contextlib.ExitStack, **extra: Any
) -> tuple[dict[str, Any], bool]:
    """Reuse or make one cache entry (`step`, `dir`); returns (its summary, reused).

    The entry is locked when the run reaches it and stays locked to the end (it may be the next
    step's input): another run can neither replace nor delete it meanwhile; whether it is
    cached is decided again under the lock. `lineage` (extra) is written into the manifest of
    an artifact made from a model; other extras go to the step's run function.
    """
    step, directory = entry["step"], entry["dir"]
    if artifacts.is_main_process():
        held.enter_context(locking.hold(directory))
    cached = cached_summary(directory)
    if cached is not None:
        ui.note(f"{label}: reused (cached in {directory})")
        return cached, True
    ui.note(f"{label}: running")
    lineage = extra.pop("lineage", None)
    with artifacts.staging(directory, force=True, resumable=step.resumable) as tmp:
        summary: dict[str, Any] = steps.modules()[step.type].run(source, step, tmp, **extra)
        if lineage is not None and (tmp / artifacts.MANIFEST).is_file():
            manifest = artifacts.read_manifest(tmp)
            artifacts.write_json(tmp / artifacts.MANIFEST, {**manifest, "lineage": lineage})
        artifacts.write_json(tmp / STEP_SUMMARY, summary)  # a reused step reports the same
    return summary, False


def _lineage(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first `count` steps (the model steps behind an export): config, key and summary."""
    return [
        {
            "step": i + 1,
            "type": rows[i]["step"].type,
            "key": rows[i]["key"],
            "config": rows[i]["step"].model_dump(mode="json"),
            "summary": summaries[i],
        }
        for i in range(count)
    ]


def _baselines(
    context: dict[str, Any], rows: list[dict[str, Any]], summaries: list[dict[str, Any]], held: Any
) -> list[dict[str, Any]]:
    """Make (or reuse) a report's baseline artifacts; returns one record per cache entry."""
    made = []
    for build in context["builds"]:
        for index, stage in enumerate(build["stages"]):
            lineage = _lineage(rows, summaries, build["number"]) if index == 0 else None
            label = f"  baseline {build['name']}: {stage['step'].type}"
            summary, reused = _produce(stage, stage["source"], label, held, lineage=lineage)
            made.append(
                {
                    "name": build["name"],
                    "type": stage["step"].type,
                    "key": stage["key"],
                    "reused": reused,
                    **summary,
                }
            )
    return made


def _execute(
    recipe: Recipe, rows: list[dict[str, Any]], out: Path, held: contextlib.ExitStack
) -> dict[str, Any]:
    """Run or reuse each planned step (and a report's baselines), then write the final artifact `out`."""
    from edgeslim.steps.report import Beside

    start, record, src = time.perf_counter(), [], Path()
    summaries: list[dict[str, Any]] = []
    source: str | Path = recipe.model
    failures, count = [], model_steps(recipe)
    for index, row in enumerate(rows):
        step, began = row["step"], time.perf_counter()
        label = f"[{index + 1}/{len(rows)}] {step.type}"
        named = references(step)  # "@N": the output of step N (e.g. the fine-tuned teacher)
        if named:
            step = step.model_copy(update={f: rows[n - 1]["dir"] for f, n in named.items()})
        extra: dict[str, Any] = {}
        made: list[dict[str, Any]] = []
        if index == count and count:  # an export of the last model: it carries the model steps
            extra["lineage"] = _lineage(rows, summaries, count)
        if row["context"] is not None:
            made = _baselines(row["context"], rows, summaries, held)
            extra["name"] = row["context"]["name"]
            extra["headline"] = row["context"]["headline"]
            extra["beside"] = tuple(
                Beside(name=b["name"], role=b["role"], path=b["dir"]) for b in row["context"]["beside"]
            )
        summary, row["cached"] = _produce({**row, "step": step}, source, label, held, **extra)
        summaries.append(summary)
        if artifacts.is_main_process():
            steps.present(step.type, f"{label}: {'reused' if row['cached'] else 'done'}", summary)
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
                **({"baselines": made} if made else {}),
            }
        )
        source = src = row["dir"]
    run_record = {
        "name": recipe.name,
        "model": recipe.model,
        "steps": record,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    return _finish(recipe, out, src, run_record, failures, start)


def _finish(
    recipe: Recipe,
    out: Path,
    src: Path,
    run_record: dict[str, Any],
    failures: list[str],
    start: float,
) -> dict[str, Any]:
    """Write the final artifact `out` from the last entry `src`, with the run record."""
    record = run_record["steps"]
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
    if (out / "report.json").exists():
        result["summary"] = f"edgeslim summary {out}"
    ui.summary(f"recipe {recipe.name}: wrote {out}", result)
    if failures:
        raise BudgetNotMet("; ".join(failures) + f" (artifact written to {out})")
    return result
