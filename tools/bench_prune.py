"""Pruning and simplification on the distilled MiniLM student, SST-2 (issue #6's table).

Each variant is made from the same distilled student with the edgeslim CLI, recovered by
distillation from the unpruned teacher (same step budget), exported (fp32) and fused; then
one `edgeslim bench` run times all of them interleaved (batch 1, seq 128, 2 threads) and
`edgeslim eval` scores each ONNX artifact on sst2:dev.

    .venv/bin/python tools/bench_prune.py --student out/train/student --teacher out/train/teacher \
        [--steps 300] [--out out/bench-prune]

Prints a Markdown table and writes <out>/bench_prune.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from edgeslim import models, pruning

EDGESLIM = str(Path(sys.executable).with_name("edgeslim"))


def cli(*args: str) -> str:
    done = subprocess.run([EDGESLIM, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"edgeslim {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student", type=Path, default=Path("out/train/student"))
    parser.add_argument("--teacher", type=Path, default=Path("out/train/teacher"))
    parser.add_argument("--steps", type=int, default=300, help="Recovery steps per variant.")
    parser.add_argument("--out", type=Path, default=Path("out/bench-prune"))
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    layers = models.read_config(args.student)["num_hidden_layers"]
    recover = ["--recover-with", str(args.teacher), "--recover-steps", str(args.steps), "--max-length", "64"]
    recover += ["--data", "sst2:train", "--eval", "sst2:dev"]
    variants: dict[str, list[str] | None] = {
        "student": None,
        "heads 50%": ["prune", "--heads", "0.5", "--importance", "taylor", *recover],
        "FFN 50%": ["prune", "--ffn", "0.5", "--importance", "taylor", *recover],
        "heads+FFN 50%": ["prune", "--heads", "0.5", "--ffn", "0.5", "--importance", "taylor", *recover],
        "GELU->ReLU": ["simplify", "--activation", "relu", *recover],
        f"share {layers} layers": ["simplify", "--share-layers", str(layers), *recover],
        "trimmed vocab": ["simplify", "--trim-vocab", "sst2:train"],
        **{
            f"unstructured {int(level * 100)}% {method}": [
                "prune",
                "--unstructured",
                str(level),
                "--method",
                method,
                "--schedule",
                "cubic",
                *recover,
            ]
            for level, method in ((0.5, "magnitude"), (0.5, "movement"), (0.8, "movement"))
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, object]] = {}
    for name, command in variants.items():
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        hf = args.student if command is None else args.out / slug / "hf"
        began = time.perf_counter()
        if command is not None and not (hf / "config.json").exists():
            cli(command[0], str(args.student), "-o", str(hf), *command[1:], "--force")
        made_s = time.perf_counter() - began
        onnx, fused = args.out / slug / "onnx", args.out / "fused" / slug  # bench names runs by folder
        cli("export", str(hf), "--task", "sequence-classification", "-o", str(onnx), "--force")
        fusion = cli("optimize", str(onnx), "-o", str(fused), "--force")
        info = json.loads(cli("inspect", str(fused), "--json"))
        score = json.loads(cli("eval", str(fused), "--data", "sst2:dev", "--json"))
        record = {}
        for file in ("edgeslim-prune.json", "edgeslim-simplify.json"):
            if (hf / file).exists():
                record = json.loads((hf / file).read_text())
        rows[name] = {
            "dir": str(fused),
            "parameters": info["parameters"],
            "onnx_mb": round((onnx / "model.onnx").stat().st_size / 1e6, 2),
            "zipped_mb": round(pruning.zipped_size(onnx / "model.onnx") / 1e6, 2),
            "attention_fused": "{found}/{expected}".format(**info["fusion"]["kinds"]["attention"]),
            "dev_accuracy": score["metrics"]["accuracy"]["value"],
            "made_s": round(made_s, 1),
            "record": {k: record[k] for k in ("sparsity", "vocabulary", "shared_groups") if k in record},
        }
        print(f"{name}: {rows[name]} {fusion.strip().splitlines()[-1] if fusion.strip() else ''}", flush=True)
    bench = json.loads(
        cli(
            "bench",
            *(str(r["dir"]) for r in rows.values()),
            "--threads",
            "2",
            "--batch",
            "1",
            "--seq",
            "128",
            "--runs",
            str(args.runs),
            "--json",
        )
    )
    by_folder = {Path(str(r["dir"])).name: n for n, r in rows.items()}
    for cell in bench["cells"]:
        row = rows[by_folder[cell["model"]]]
        row["median_ms"] = cell["median_ms"]
        row["latency_vs_student"] = round(1 / cell["speedup_vs_baseline"], 3)  # median(x) / median(student)
        row["latency_ci95"] = [round(1 / x, 3) for x in reversed(cell["speedup_ci95"])]
    (args.out / "bench_prune.json").write_text(json.dumps({"rows": rows, "bench": bench}, indent=2) + "\n")
    print(
        "\n| variant | parameters | fp32 ONNX MB | zipped MB | attention fused "
        "| latency vs student (95% CI) | dev accuracy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        ci = r["latency_ci95"]
        print(
            f"| {name} | {r['parameters']:,} | {r['onnx_mb']} | {r['zipped_mb']} | {r['attention_fused']} | "
            f"{r['latency_vs_student']}x ({ci[0]}-{ci[1]}) | {r['dev_accuracy']:.4f} |"
        )


if __name__ == "__main__":
    main()
