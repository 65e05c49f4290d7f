"""Small embeddings on MiniLM: which quantized form of the word-embedding table to use per mode.

Issue 11 part 1. Every variant starts from the same fused (or embeddings-unfused) fp32 MiniLM and
differs only in how the embedding table is stored and run:

- dynamic: fused EmbedLayerNormalization kept fp32, or turned into QEmbedLayerNormalization by
  onnxruntime's quantize_dynamic (op type "EmbedLayerNormalization");
- static QDQ (MatMuls calibrated, post-GELU MatMuls fp32 as edgeslim's default): the table fp32;
  a second dynamic pass over EmbedLayerNormalization only (QEmbedLayerNormalization inside a QDQ
  graph); an int8 table behind DequantizeLinear feeding the fused node; the unfused graph with
  Gather quantized (int8 table -> DequantizeLinear -> Gather -> Add + LayerNorm);
- static QOperator with "EmbedLayerNormalization" in the op types;
- int4 weight-only: fused table fp32, the QEmbedLayerNormalization pass, or the unfused Gather
  as 4-bit GatherBlockQuantized.

For each: size on disk, session RSS (a fresh process: create the session, run once; minus the
same process without a session), latency at b1 s128 (1 and 2 threads, interleaved, spinning off,
ratio to the fp32-table variant of the same mode with a 95% CI), cosine of mean-pooled outputs vs
fp32 on SST-2 dev sentences, and whether onnxruntime folds a DequantizeLinear on the table at load
(its optimized graph, level ORT_ENABLE_ALL, saved and inspected).

    .venv/bin/python tools/bench_embeddings.py [--runs 40] [--sentences 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeslim import artifacts, bench, data, evaluation, quantization
from edgeslim.metrics import cosine_rows
from edgeslim.steps import export, optimize, quantize, run_single

WORK = Path("out/bench-embeddings")


def _step(name: str, src: str | Path, cfg: object) -> Path:
    out = WORK / name
    if not (out / artifacts.MANIFEST).exists():
        run_single(src, cfg, out, force=True)  # type: ignore[arg-type]
    return out / artifacts.MODEL


def _eln_pass(src: Path, dst: Path) -> Path:
    """onnxruntime's quantize_dynamic over EmbedLayerNormalization only (no pre-processing: the
    symbolic shape inference does not know the quantized ops already in `src`)."""
    if not dst.exists():
        quantization.dynamic(src, dst, ["EmbedLayerNormalization"], True, False, [], False)
    return dst


def _dq_table(src: Path, dst: Path) -> Path:
    """The fused node's word-embedding initializer as int8 (per-row scale) behind DequantizeLinear."""
    import onnx
    from onnx import helper, numpy_helper

    if dst.exists():
        return dst
    model = onnx.load(str(src))
    graph = model.graph
    node = next(n for n in graph.node if n.op_type == "EmbedLayerNormalization")
    name = node.input[2]  # inputs: input_ids, segment_ids, word_embedding, ...
    init = next(i for i in graph.initializer if i.name == name)
    table = numpy_helper.to_array(init).astype(np.float32)
    scale = np.maximum(np.abs(table).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    graph.initializer.remove(init)
    graph.initializer.extend(
        [
            numpy_helper.from_array(q, name + "_q"),
            numpy_helper.from_array(scale.astype(np.float32), name + "_scale"),
            numpy_helper.from_array(np.zeros(len(scale), np.int8), name + "_zp"),
        ]
    )
    dq = helper.make_node(
        "DequantizeLinear", [name + "_q", name + "_scale", name + "_zp"], [name], name="table_dq", axis=0
    )
    graph.node.insert(0, dq)
    onnx.save(model, str(dst))
    return dst


def build() -> dict[str, Path]:
    fp32 = WORK / "fp32"
    if not (fp32 / artifacts.MANIFEST).exists():
        run_single("minilm", export.Config(), fp32, force=True)
    fused = _step("fused", fp32, optimize.Config(require_full_fusion=True))
    _step("fused-gather", fp32, optimize.Config(fuse_embeddings=False))
    static = {"mode": "static", "calib_size": 128}
    models = {
        "fp32 fused": fused,
        "dynamic, table fp32": _step("dyn", WORK / "fused", quantize.Config(quantize_embeddings=False)),
        "static QDQ, table fp32": _step(
            "qdq", WORK / "fused", quantize.Config(quantize_embeddings=False, **static)
        ),
        "int4 weight-only, table fp32": _step(
            "int4", WORK / "fused", quantize.Config(mode="weight-only", quantize_embeddings=False)
        ),
    }
    models["dynamic, QEmbedLayerNormalization"] = _eln_pass(
        models["dynamic, table fp32"], WORK / "dyn-qeln.onnx"
    )
    models["static QDQ + QEmbedLayerNormalization pass"] = _eln_pass(
        models["static QDQ, table fp32"], WORK / "qdq-qeln.onnx"
    )
    models["static QDQ, int8 table -> DequantizeLinear -> fused node"] = _dq_table(
        models["static QDQ, table fp32"], WORK / "qdq-dqtable.onnx"
    )
    models["static QDQ unfused, int8 table -> DQ -> Gather"] = _step(
        "qdq-gather", WORK / "fused-gather", quantize.Config(quantize_embeddings=True, **static)
    )
    models["static QOperator, EmbedLayerNormalization in op types"] = _qop_eln(fused)
    models["int4 weight-only + QEmbedLayerNormalization pass"] = _eln_pass(
        models["int4 weight-only, table fp32"], WORK / "int4-qeln.onnx"
    )
    models["int4 weight-only unfused, 4-bit Gather"] = _step(
        "int4-gather",
        WORK / "fused-gather",
        quantize.Config(mode="weight-only", quantize_embeddings=True),
    )
    return models


def _qop_eln(fused: Path) -> Path:
    """Static QOperator with EmbedLayerNormalization among the op types (same calibration)."""
    dst = WORK / "qop-eln.onnx"
    if dst.exists():
        return dst
    work = WORK / "qop-work"
    work.mkdir(exist_ok=True)
    pre = work / "pre.onnx"
    quantization.preprocess(fused, pre, False)
    examples = data.load("sst2:train").head(128)
    batches = data.batches(WORK / "fused", examples, 16, 128)
    ops = ["MatMul", "Gemm", "EmbedLayerNormalization"]
    ranges = quantization.calibrate(pre, batches, "minmax", ops, False, False, work)
    quantization.static(pre, dst, ranges, "qoperator", ops, True, False, "U8", "S8", False, [], False, work)
    return dst


RSS = """
import sys, numpy as np, onnxruntime as ort
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss()
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
ids = np.full((1, 128), 2000, np.int64)
feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})
print(rss() - before)
"""


def session_rss_mb(model: Path) -> float:
    """Resident memory a fresh process gains by loading `model` and running it once (b1 s128)."""
    run = subprocess.run([sys.executable, "-c", RSS, str(model)], capture_output=True, text=True, check=True)
    return round(float(run.stdout), 1)


def table_dequantize(model: Path) -> str | None:
    """What onnxruntime's optimized graph (ORT_ENABLE_ALL, saved at load) does with a
    DequantizeLinear on an embedding table: 'kept' (the whole table every run), 'after gather'
    (moved behind the Gather: only the gathered rows), 'folded' (gone); None without one."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(model), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    if not any(
        n.op_type == "DequantizeLinear" and n.input[0] in inits and "embeddings" in n.input[0]
        for n in graph.node
    ):
        return None
    target = WORK / "optimized.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    after = onnx.load(str(target)).graph
    inits = {i.name for i in after.initializer}
    whole = [
        n
        for n in after.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and "embeddings" in n.input[0]
    ]
    if whole:
        return "kept"
    gathered = [
        n for n in after.node if n.op_type == "Gather" and n.input[0] in inits and "embeddings" in n.input[0]
    ]
    return "after gather" if gathered else "folded"


def pooled(model: Path, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    rows = []
    for feeds, out in zip(batches, evaluation.outputs(model, batches), strict=True):
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        rows.append((out["last_hidden_state"] * mask).sum(1) / mask.sum(1))
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--sentences", type=int, default=300)
    args = parser.parse_args()
    models = build()
    batches = evaluation.feeds_for(WORK / "fused", data.load("sst2:dev").head(args.sentences))
    reference = pooled(models["fp32 fused"], batches)
    rows: dict[str, dict[str, object]] = {}
    for name, path in models.items():
        cos = cosine_rows(reference, pooled(path, batches))
        rows[name] = {
            "size_mb": round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6, 2),
            "session_rss_mb": session_rss_mb(path),
            "cosine_mean": round(float(cos.mean()), 4),
            "cosine_min": round(float(cos.min()), 4),
            "table_dequantize": table_dequantize(path),
        }
    ids = np.random.default_rng(0).integers(1000, 30000, size=(1, 128), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    baseline = {
        "dynamic": "dynamic, table fp32",
        "static": "static QDQ, table fp32",
        "int4": "int4 weight-only, table fp32",
    }
    for threads in (1, 2):
        sessions = {n: bench.session(p, threads) for n, p in models.items()}
        times = bench.interleaved(sessions, feeds, args.runs)
        for name, t in times.items():
            family = (
                "dynamic" if name.startswith("dynamic") else "int4" if name.startswith("int4") else "static"
            )
            ref = times[baseline[family]] if name != "fp32 fused" else t
            ratio, low, high = bench.ratio_ci(t, ref)
            rows[name][f"t{threads}"] = {
                "median_ms": round(float(np.median(t)), 2),
                "vs_table_fp32": [round(ratio, 2), round(low, 2), round(high, 2)],
            }
    (WORK / "results.json").write_text(json.dumps(rows, indent=2))
    print(
        "| variant | MB | session RSS MB | cosine mean / min | DequantizeLinear at load | "
        "b1s128 t1 ms (vs table fp32, 95% CI) | t2 ms (vs table fp32) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for name, r in rows.items():
        cells = []
        for t in ("t1", "t2"):
            c = r[t]
            ratio, low, high = c["vs_table_fp32"]  # type: ignore[index]
            cells.append(f"{c['median_ms']} ({ratio}x, {low}-{high})")  # type: ignore[index]
        fold = r["table_dequantize"] or "-"
        print(
            f"| {name} | {r['size_mb']} | {r['session_rss_mb']} | {r['cosine_mean']} / {r['cosine_min']} "
            f"| {fold} | {cells[0]} | {cells[1]} |"
        )


if __name__ == "__main__":
    main()
