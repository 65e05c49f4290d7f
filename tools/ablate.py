"""Ablate a recipe's accuracy levers: one change per arm, each arm run as a recipe, one table.

Each arm is the recipe from its distill step to its eval step (finetune, bench, report and gate
dropped; the teacher given as the model) with one lever changed against the base arm. Arms run
one after another with `edgeslim run` (sharing its step cache: an arm that changes only the
quantize step reuses the base arm's student). Every final artifact is then scored on the same
dev sentences: accuracy with a bootstrap 95% CI, and the paired difference to the base arm
(the same resampled sentences for both arms) with its own 95% CI, so a lever whose interval
spans 0 is reported as not shown to help. Writes OUT/NAME.md and OUT/NAME.json (NAME:
--name, default `arms`); arms can be split between processes that share OUT (each its own
--name; start the second once the first has finished its base arm, which it then reuses from
the step cache) and joined with --merge.

    .venv/bin/python tools/ablate.py --recipe recipes/sst2-edge.yaml --model out/train/teacher \\
        --steps 600 --out out/ablation [--arms base,longer,augment,...] [--name part1]
    .venv/bin/python tools/ablate.py --out out/ablation --merge     # every OUT/*.json -> ablation.md
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgeslim import data, evaluation, metrics
from edgeslim.defaults import RATIO_BOOTSTRAP
from edgeslim.errors import EdgeslimError

SCHEMA = "edgeslim.ablation/1"
KEPT = ("distill", "simplify", "export", "optimize", "quantize", "eval")
Steps = list[dict[str, Any]]


def _distill(steps: Steps) -> dict[str, Any]:
    return next(s for s in steps if s["type"] == "distill")


def _quantize(steps: Steps) -> dict[str, Any]:
    return next(s for s in steps if s["type"] == "quantize")


def _losses(steps: Steps, **weights: float) -> None:
    _distill(steps).setdefault("losses", {}).update(weights)


def _longer(steps: Steps) -> None:
    d = _distill(steps)
    d["max_steps"] *= 2
    d["eval_every"] = d["save_every"] = d["max_steps"]


def _augment(steps: Steps) -> None:
    _distill(steps)["augment"] = {"copies": 1, "size": 8000}


def _no_prune(steps: Steps) -> None:
    _distill(steps)["prune_ffn"] = 0.0


def _three_layers(steps: Steps) -> None:
    _distill(steps)["student_layers"] = 3


def _static(steps: Steps) -> None:
    _quantize(steps).update(
        mode="static", calib="sst2:train", calib_size=256, max_drop=0.005, eval="sst2:train", eval_size=1000
    )


# name -> (what changes against the base arm, the change)
ARMS: dict[str, tuple[str, Callable[[Steps], None]]] = {
    "base": ("the recipe's distill and quantize steps at --steps", lambda steps: None),
    "longer": ("twice the distillation steps", _longer),
    "augment": (
        "+ 8,000 augmented SST-2 train sentences (word dropout, replacement, span shuffle), teacher-scored",
        _augment,
    ),
    "attention": (
        "+ attention-map loss (weight 1; heads averaged)",
        lambda steps: _losses(steps, attention=1.0),
    ),
    "no-hidden": ("- hidden-state loss (weight 0)", lambda steps: _losses(steps, hidden=0.0)),
    "no-prune": ("no FFN pruning while distilling (FFN 1024, larger)", _no_prune),
    "three-layers": ("3 student layers instead of 2", _three_layers),
    "static": (
        "static int8 (256 calibration sentences), nodes kept fp32 until the drop on 1,000 train sentences "
        "is <= 0.5 pt, instead of dynamic",
        _static,
    ),
}


def arm_recipe(recipe: dict[str, Any], arm: str, model: str, steps: int, out: Path) -> dict[str, Any]:
    """The recipe of one arm: distill .. eval of `recipe`, `model` as the teacher, `steps`
    distillation steps (eval and checkpoint once, at the end), then the arm's change."""
    if arm not in ARMS:
        raise SystemExit(f"error: unknown arm '{arm}': choose from {', '.join(ARMS)}")
    kept = [copy.deepcopy(s) for s in recipe["steps"] if s["type"] in KEPT]
    missing = [t for t in ("distill", "quantize", "eval") if t not in [s["type"] for s in kept]]
    if missing:
        raise SystemExit(f"error: the recipe has no {', '.join(missing)} step: ablate needs distill .. eval")
    distill = _distill(kept)
    distill.update(max_steps=steps, eval_every=steps, save_every=steps)
    ARMS[arm][1](kept)
    return {
        "name": f"{recipe['name']}-ablation-{arm}",
        "description": f"{recipe['name']} ablation arm '{arm}': {ARMS[arm][0]}",
        "model": model,
        "output": str(out / arm),
        "steps": kept,
    }


def paired_difference(
    correct: np.ndarray, base: np.ndarray, samples: int = RATIO_BOOTSTRAP
) -> dict[str, Any]:
    """Accuracy difference (arm - base) in points with a paired bootstrap 95% CI: both arms are
    scored on the same resampled sentences each time."""
    diff = float(correct.mean() - base.mean()) * 100
    low, high = metrics.bootstrap_ci(lambda a, b: float(a.mean() - b.mean()) * 100, correct, base, samples)
    return {"points": round(diff, 2), "ci95": [round(low, 2), round(high, 2)]}


def score(artifact: Path, examples: data.Examples) -> np.ndarray:
    """1 where the artifact's int8 model gets the dev sentence right, else 0."""
    batches = evaluation.feeds_for(artifact, examples)
    outs = evaluation.outputs(artifact / "model.onnx", batches)
    if "logits" not in outs[0]:
        raise SystemExit(f"error: {artifact} has no logits output: ablate scores classifiers only")
    preds = np.concatenate([o["logits"].argmax(-1) for o in outs])
    return (preds == evaluation.label_ids(examples, artifact)).astype(np.float64)


def merge(out: Path) -> dict[str, Any]:
    """Join the arms of every ablation table in `out` (first occurrence of an arm wins, base
    first) and recompute each arm's paired difference to the base arm."""
    tables = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "ablation.json"]
    tables = [t for t in tables if t.get("schema") == SCHEMA]
    if not tables:
        raise SystemExit(f"error: no ablation tables (*.json) in {out}: run arms first")
    result = {k: v for k, v in tables[0].items() if k != "arms"}
    arms: dict[str, Any] = {}
    for t in tables:
        if (t["model"], t["steps"], t["data"]) != (result["model"], result["steps"], result["data"]):
            raise SystemExit(f"error: tables in {out} differ in model, steps or data: merge like with like")
        for name, entry in t["arms"].items():
            if "correct" in entry:  # a scored arm wins over a failed run of the same arm
                arms.setdefault(name, entry)
    for t in tables:
        for name, entry in t["arms"].items():
            if "error" in entry:
                arms.setdefault(name, entry)
    order = ["base", *(a for a in ARMS if a != "base" and a in arms)]
    result["arms"] = {a: arms[a] for a in order if a in arms}
    base = result["arms"].get("base", {}).get("correct")
    for name, entry in result["arms"].items():
        if name != "base" and base and entry.get("correct"):
            entry["vs_base"] = paired_difference(_bits(entry["correct"]), _bits(base))
    return result


def _bits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.float64) - ord("0")


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Teacher `{result['model']}`, {result['steps']} distillation steps per arm, dev `{result['data']}` "
        f"({result['n']} sentences); each arm changes one thing against `base`.",
        "",
        "| arm | change | MB | dev accuracy [95% CI] | vs base, pt [paired 95% CI] | wall s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in result["arms"].items():
        if "error" in r:
            lines.append(f"| {name} | {r['change']} | | failed: {r['error']} | | {r['wall_s']} |")
            continue
        acc = f"{r['accuracy']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]"
        d = r.get("vs_base")
        vs = "" if d is None else f"{d['points']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
        lines.append(f"| {name} | {r['change']} | {r['mb']:.2f} | {acc} | {vs} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path)
    p.add_argument("--model", help="The fine-tuned teacher (a model folder).")
    p.add_argument("--steps", type=int, default=600, help="Distillation steps of every arm but 'longer'.")
    p.add_argument("--out", type=Path, default=Path("out/ablation"))
    p.add_argument("--arms", default=",".join(ARMS), help=f"Comma list from: {', '.join(ARMS)}.")
    p.add_argument("--data", default="sst2:dev", help="Dev data every arm is scored on.")
    p.add_argument("--name", default="arms", help="Stem of this run's table files in --out.")
    p.add_argument("--merge", action="store_true", help="Join OUT/*.json into OUT/ablation.md; run nothing.")
    args = p.parse_args(argv)
    if args.merge:
        merged = merge(args.out)
        (args.out / "ablation.json").write_text(json.dumps(merged, indent=2) + "\n")
        (args.out / "ablation.md").write_text(table(merged))
        print(table(merged))
        return 0
    if args.recipe is None or args.model is None:
        raise SystemExit("error: give --recipe and --model (or --merge)")
    if args.steps < 1:
        raise SystemExit("error: --steps must be at least 1")
    if not args.recipe.is_file():
        raise SystemExit(f"error: recipe {args.recipe} not found")
    if not Path(args.model).is_dir():
        raise SystemExit(f"error: model {args.model} is not a folder: give the fine-tuned teacher")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:  # before any arm runs
        raise SystemExit(f"error: unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    if "base" not in arms:
        arms.insert(0, "base")
    recipe = yaml.safe_load(args.recipe.read_text())
    if not isinstance(recipe, dict) or not isinstance(recipe.get("steps"), list) or "name" not in recipe:
        raise SystemExit(f"error: {args.recipe} is not a recipe (a mapping with name and steps)")
    for arm in arms:  # every arm's recipe is built (and refused) before the first one runs
        arm_recipe(recipe, arm, args.model, args.steps, args.out)
    try:
        examples = data.load(args.data)
    except EdgeslimError as exc:
        raise SystemExit(f"error: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "recipe": str(args.recipe),
        "model": args.model,
        "steps": args.steps,
        "data": args.data,
        "n": len(examples.texts),
        "arms": {},
    }
    scored: dict[str, np.ndarray] = {}
    for arm in arms:
        spec = arm_recipe(recipe, arm, args.model, args.steps, args.out)
        path = args.out / f"{arm}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        start = time.perf_counter()
        with (args.out / f"{arm}.log").open("w") as log:
            rc = subprocess.run(
                [sys.executable, "-m", "edgeslim", "run", str(path), "--force"],
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        entry: dict[str, Any] = {"change": ARMS[arm][0], "wall_s": round(time.perf_counter() - start)}
        artifact = Path(spec["output"])
        if rc != 0 or not (artifact / "model.onnx").is_file():
            entry["error"] = f"exit {rc}, see {args.out / (arm + '.log')}"
        else:
            correct = scored[arm] = score(artifact, examples)
            low, high = metrics.bootstrap_ci(lambda g, p: float(p.mean()), correct, correct, RATIO_BOOTSTRAP)
            entry.update(
                accuracy=round(float(correct.mean()), 4),
                ci95=[round(low, 4), round(high, 4)],
                mb=round((artifact / "model.onnx").stat().st_size / 1e6, 2),
                correct="".join(str(int(c)) for c in correct),
            )
            if arm != "base" and "base" in scored:
                entry["vs_base"] = paired_difference(correct, scored["base"])
        result["arms"][arm] = entry
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{args.name}.md").write_text(table(result))
        print(f"{arm}: { {k: v for k, v in entry.items() if k != 'correct'} }", flush=True)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
