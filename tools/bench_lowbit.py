"""Low-bit methods on one SST-2 student, measured side by side: fp32, dynamic int8, post-training
static int8 of all MatMuls, QAT int8, and ternary/binary weights (direct and trained; FFN only
and all Linear layers; the FFN-only ones also fused with the rest in dynamic int8, `+int8`).
Every model is exported by `edgeslim export`, scored on the same dev sentences (accuracy with a
bootstrap 95% CI; the paired difference to the fp32 student with its own CI) and timed
interleaved in one `edgeslim bench` run. Writes OUT/lowbit.md and OUT/lowbit.json; each
command's output is kept under OUT (a rerun reuses finished ones).

    .venv/bin/python tools/bench_lowbit.py --student STUDENT_DIR --teacher TEACHER_DIR \\
        --steps 400 --out out/lowbit [--arms qat,ternary-ffn,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeslim import artifacts, data, metrics
from edgeslim.defaults import RATIO_BOOTSTRAP

BIN = Path(sys.executable).parent / "edgeslim"
sys.path.insert(0, str(Path(__file__).parent))  # tools/ablate.py's scoring
TASK = ["--task", "sequence-classification"]
# name -> (the low-bit command's arguments after the model, or None for none; export source)
TRAINED = {
    "qat": ["qat"],
    "ternary-ffn": ["binarize", "--weights", "ternary", "--layers", "ffn"],
    "binary-ffn": ["binarize", "--weights", "binary", "--layers", "ffn"],
    "ternary-all": ["binarize", "--weights", "ternary", "--layers", "all"],
    "binary-all": ["binarize", "--weights", "binary", "--layers", "all"],
}
DIRECT = {
    "ternary-ffn-direct": ["binarize", "--weights", "ternary", "--layers", "ffn", "--direct"],
    "binary-ffn-direct": ["binarize", "--weights", "binary", "--layers", "ffn", "--direct"],
    "ternary-all-direct": ["binarize", "--weights", "ternary", "--layers", "all", "--direct"],
    "binary-all-direct": ["binarize", "--weights", "binary", "--layers", "all", "--direct"],
}


def sh(args: list[str], log: Path) -> None:
    """Run one edgeslim command, its output appended to `log`; stop on failure."""
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ edgeslim {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run([str(BIN), *args], stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"edgeslim {' '.join(args)} failed ({done.returncode}): see {log}")
    print(f"  {time.perf_counter() - start:7.1f} s  edgeslim {' '.join(args[:6])}", flush=True)


def make(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Every arm's ONNX artifact (made once; reused when it exists)."""
    log = out / "commands.log"
    arms = [a for a in args.arms.split(",") if a]
    made: dict[str, Path] = {}

    def once(path: Path, command: list[str]) -> Path:
        if not (path / artifacts.MANIFEST).is_file() and not (path / "config.json").is_file():
            sh([*command, "-o", str(path)], log)
        return path

    fp32 = once(out / "fp32", ["export", str(args.student), *TASK])
    made["fp32"] = fp32
    made["dynamic-int8"] = once(
        out / "dynamic-int8",
        ["quantize", str(once(out / "fused", ["optimize", str(fp32)])), "--mode", "dynamic"],
    )
    made["ptq-static-int8"] = once(
        out / "ptq-static-int8",
        [
            "quantize",
            str(fp32),
            "--mode",
            "static",
            "--calib",
            args.data,
            "--calib-size",
            str(args.calib_size),
            "--no-keep-post-gelu-fp32",  # all MatMuls, as QAT quantizes every Linear
        ],
    )
    train = [
        "--data",
        args.data,
        "--eval",
        args.eval,
        "--max-steps",
        str(args.steps),
        "--eval-every",
        str(args.steps),
    ]
    train += ["--save-every", str(max(1, args.steps // 4)), "--teacher", str(args.teacher)]
    for name in arms:
        if name in TRAINED:
            model = once(
                out / f"{name}-model", [TRAINED[name][0], str(args.student), *TRAINED[name][1:], *train]
            )
        elif name in DIRECT:
            model = once(
                out / f"{name}-model",
                [DIRECT[name][0], str(args.student), *DIRECT[name][1:], "--eval", args.eval],
            )
        else:
            raise SystemExit(f"unknown arm {name}: choose from {', '.join([*TRAINED, *DIRECT])}")
        made[name] = once(out / name, ["export", str(model), *TASK])
        if name == "qat":  # fused like dynamic int8, for a fair latency comparison
            made["qat-fused"] = once(out / "qat-fused", ["optimize", str(made[name])])
        if name.startswith(("ternary-ffn", "binary-ffn")):  # the rest fused and dynamic int8
            fused = once(out / f"{name}-fused", ["optimize", str(made[name])])
            made[f"{name}+int8"] = once(out / f"{name}+int8", ["quantize", str(fused), "--mode", "dynamic"])
    return made


def score(made: dict[str, Path], eval_data: str) -> dict[str, dict[str, Any]]:
    """Accuracy with a 95% CI, and the paired difference to fp32 with its CI, on the same sentences
    (ablate.py's scoring: the same resampled sentences for both models)."""
    from ablate import paired_difference  # tools/ablate.py
    from ablate import score as correct_of

    examples = data.load(eval_data, None, None, None, None)
    correct = {name: correct_of(path, examples) for name, path in made.items()}
    base = correct["fp32"]
    rows = {}
    for name, hits in correct.items():
        low, high = metrics.bootstrap_ci(lambda g, p: float(p.mean()), hits, hits, RATIO_BOOTSTRAP)
        diff = paired_difference(hits, base, RATIO_BOOTSTRAP)
        rows[name] = {
            "accuracy": round(float(hits.mean()), 4),
            "ci95": [round(low, 4), round(high, 4)],
            "vs_fp32_pt": diff,
            "size_mb": round(artifacts.artifact_size(made[name]) / 1e6, 3),
        }
    return rows


def _diff(value: dict[str, Any]) -> str:
    return f"{value['points']:+.2f} ({value['ci95'][0]:+.2f} to {value['ci95'][1]:+.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--data", default="sst2:train")
    parser.add_argument("--eval", default="sst2:dev")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seq", type=int, default=128, help="Tokens per timed input (batch 1, 1 thread).")
    parser.add_argument("--arms", default=",".join([*DIRECT, *TRAINED]))
    parser.add_argument("--out", type=Path, default=Path("out/lowbit"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    made = make(args.out, args)
    rows = score(made, args.eval)
    bench = args.out / "bench.json"
    sh(
        [
            "bench",
            *map(str, made.values()),
            "--threads",
            "1",
            "--batch",
            "1",
            "--seq",
            str(args.seq),
            "--runs",
            str(args.runs),
            "--out",
            str(bench),
        ],
        args.out / "commands.log",
    )
    cells = {c["model"]: c for c in json.loads(bench.read_text())["cells"]}  # named by folder
    for name, row in rows.items():
        cell = cells.get(name, {})
        row["median_ms"] = cell.get("median_ms")
    record = {
        "student": str(args.student),
        "teacher": str(args.teacher),
        "steps": args.steps,
        "rows": rows,
        "bench": json.loads(bench.read_text()).get("cpu"),
    }
    (args.out / "lowbit.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"Student {args.student}, teacher {args.teacher}, {args.steps} training steps per trained arm, "
        f"eval {args.eval}; latency t1 b1 s{args.seq}, {args.runs} interleaved runs.",
        "",
        "| model | accuracy (95% CI) | − fp32, points (95% CI) | size MB | median ms |",
        "|---|---|---|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['accuracy']:.4f} ({row['ci95'][0]:.4f}–{row['ci95'][1]:.4f}) | "
            f"{_diff(row['vs_fp32_pt'])} | "
            f"{row['size_mb']:.2f} | {row['median_ms']} |"
        )
    (args.out / "lowbit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
