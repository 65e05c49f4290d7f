"""Compare edgeslim artifacts with the standard paths, in one run on one CPU.

Rows: PyTorch fp32 eager; ORT fp32 (Optimum's export); Optimum int8 (ORTQuantizer, dynamic,
the preset that matches this CPU); Olive int8 (OnnxConversion + OnnxDynamicQuantization, when
olive-ai is installed); every edgeslim artifact given. All from the same teacher, timed on the
same sentences, interleaved round-robin in one process with onnxruntime's intra-op spinning off
(shared/MEASURED.md), per cell (batch x seq) and thread count; latency ratios to Optimum int8
with bootstrap 95% CIs; the task metric on the same dev sentences with bootstrap 95% CIs.
Writes OUT/compare.md, OUT/compare.json, OUT/pareto.png and the built models under OUT/models.

    .venv/bin/python tools/compare.py --teacher DIR --artifact out/x [--artifact ...] \\
        --data sst2:dev --out out/compare [--runs 40] [--cells b1s128,b1s32,b8s128] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import artifacts, bench, data, evaluation, hardware, models
from edgeslim.defaults import BOOTSTRAP
from edgeslim.errors import EdgeslimError, InputError, OutputError, ValidationFailed

SCHEMA = "edgeslim.compare/1"
BASELINE = "Optimum int8"
Feeds = dict[str, np.ndarray]
Predict = Callable[[Feeds], dict[str, np.ndarray]]
OLIVE_HINT = "pip install olive-ai -c constraints.txt (resolves without changing a pinned package)"


@dataclass
class Row:
    """One compared model: a PyTorch checkpoint folder or an ONNX file, and how to feed it."""

    name: str
    kind: str  # "torch" or "onnx"
    model: Path  # the HF folder (torch) or the .onnx file
    tokenizer: Path  # a folder with tokenizer.json and config.json
    max_length: int
    how: str
    mb: float = 0.0
    params: int = 0
    metric: dict[str, Any] = field(default_factory=dict)
    missing: str = ""  # why the row has no model (Olive not installed, failed)
    variant: str = ""  # shown after the name in the tables (which Optimum graph was quantized)


def optimum_preset(target: hardware.Target) -> str:
    """Optimum's AutoQuantizationConfig preset: avx512_vnni with VNNI, else avx2 (arm64 on Arm)."""
    if target.arch == "arm":
        return "arm64"
    return "avx512_vnni" if target.vnni else "avx2"


def parse_cells(spec: str) -> list[tuple[int, int]]:
    """'b1s128,b8s128' -> [(1, 128), (8, 128)] (batch, seq)."""
    cells = []
    for part in spec.split(","):
        match = re.fullmatch(r"b(\d+)s(\d+)", part.strip())
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise InputError(f"cell '{part}' is not of the form bBATCHsSEQ (e.g. b1s128): fix --cells")
        cells.append((int(match[1]), int(match[2])))
    return cells


def parse_threads(spec: str) -> list[int]:
    """'1,2' -> [1, 2]."""
    try:
        threads = [int(x) for x in spec.split(",")]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise InputError(f"--threads '{spec}' must be positive integers separated by commas (e.g. 1,2)")
    return threads


def first_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first sentence of its message."""
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_torch(teacher: Path, task: str) -> Any:
    """The teacher as transformers loads it by default (its default attention, eval mode)."""
    import transformers

    models.check_tokenizer(teacher, models.read_config(teacher))
    models.weight_files(teacher, allow_pickle=False)  # safetensors only, checked
    transformers.logging.set_verbosity_error()
    auto: Any = transformers.AutoModel
    if task != "feature-extraction":
        auto = transformers.AutoModelForSequenceClassification
    try:
        return auto.from_pretrained(teacher, local_files_only=True, use_safetensors=True).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot load {teacher} for {task}: {first_line(exc)}") from None


# ---- building the comparison models -------------------------------------------------------------


def build_optimum(teacher: Path, task: str, work: Path, preset: str) -> tuple[Row, Row]:
    """Optimum's standard path: export=True, then ORTQuantizer dynamic int8 with `preset`, on the
    O2-optimized graph when it can be quantized, else on the plain export (said in the row)."""
    import transformers
    from optimum.onnxruntime import (
        ORTModelForFeatureExtraction,
        ORTModelForSequenceClassification,
        ORTOptimizer,
        ORTQuantizer,
    )
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    transformers.logging.set_verbosity_error()
    auto = ORTModelForFeatureExtraction if task == "feature-extraction" else ORTModelForSequenceClassification
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = auto.from_pretrained(teacher, export=True)
    exported.save_pretrained(work / "optimum-fp32")
    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False)
    detail = f"ORTQuantizer dynamic int8, preset {preset} (per_channel={qconfig.per_channel})"
    try:
        ORTOptimizer.from_pretrained(exported).optimize(
            save_dir=work / "optimum-o2", optimization_config=AutoOptimizationConfig.O2()
        )
        quantizer = ORTQuantizer.from_pretrained(work / "optimum-o2", file_name="model_optimized.onnx")
        quantizer.quantize(save_dir=work / "optimum-int8", quantization_config=qconfig)
        how = f"Optimum export, O2, {detail}"
    except Exception as exc:  # optimum/onnxruntime raise untyped errors
        reason = first_line(exc)
        print(f"compare: Optimum's O2 graph cannot be quantized ({reason}): quantizing the plain export")
        shutil.rmtree(work / "optimum-int8", ignore_errors=True)
        try:
            quantizer = ORTQuantizer.from_pretrained(work / "optimum-fp32")
            quantizer.quantize(save_dir=work / "optimum-int8", quantization_config=qconfig)
        except Exception as plain_exc:  # no baseline row: nothing to compare against
            raise ValidationFailed(
                f"Optimum's ORTQuantizer could not quantize its own export of {teacher} "
                f"({first_line(plain_exc)}): this teacher has no Optimum int8 baseline"
            ) from None
        how = f"Optimum export (not O2: its graph cannot be quantized, {reason}), {detail}"
    limit = models.max_length(teacher, models.read_config(teacher))
    plain = f"{auto.__name__}.from_pretrained(export=True): the unoptimized export (onnxruntime applies "
    plain += "its default session optimizations)"
    fp32 = Row("ORT fp32", "onnx", work / "optimum-fp32" / "model.onnx", teacher, limit, plain)
    int8 = Row(BASELINE, "onnx", work / "optimum-int8" / "model_quantized.onnx", teacher, limit, how)
    int8.variant = "O2 graph" if how.startswith("Optimum export, O2") else "plain export: O2 not quantizable"
    return fp32, int8


def build_olive(teacher: Path, task: str, work: Path) -> Row:
    """Olive's dynamic int8 of the teacher through its Python API, or a row saying why not."""
    limit = models.max_length(teacher, models.read_config(teacher))
    row = Row("Olive int8", "onnx", work / "olive" / "model.onnx", teacher, limit, "")
    try:
        import logging

        from olive.workflows import run as olive_run

        logging.getLogger("olive").setLevel(logging.WARNING)
    except ImportError as exc:
        row.missing = f"not installed: {first_line(exc)}; {OLIVE_HINT}"
        return row
    from importlib.metadata import version

    config = {
        "input_model": {
            "type": "HfModel",
            "model_path": str(teacher),
            "task": "feature-extraction" if task == "feature-extraction" else "text-classification",
        },
        "passes": {
            "conversion": {"type": "OnnxConversion", "target_opset": 17},
            "quantization": {"type": "OnnxDynamicQuantization"},
        },
        "cache_dir": str(work / "olive-cache"),
        "output_dir": str(work / "olive"),
        "log_severity_level": 3,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = olive_run(config)
        best = output.get_best_candidate() if output.has_output_model() else None
        if best is None or not best.model_path:
            raise RuntimeError("Olive produced no output model")
    except Exception as exc:  # Olive raises untyped errors
        row.missing = f"failed: {first_line(exc)}"
        print(f"compare: Olive {row.missing}")
        return row
    finally:
        shutil.rmtree(work / "olive-cache", ignore_errors=True)
    path = Path(best.model_path)
    row.model = path / "model.onnx" if path.is_dir() else path
    row.how = (
        f"olive-ai {version('olive-ai')}: OnnxConversion (opset 17) + OnnxDynamicQuantization "
        "(Olive's defaults: int8 weights, per-tensor)"
    )
    return row


def artifact_row(path: Path, task: str) -> Row:
    """An edgeslim artifact folder as a row; InputError when it is not one or serves another task."""
    manifest = artifacts.read_manifest(path)
    if manifest.get("task") != task:
        raise InputError(
            f"{path} is a {manifest.get('task')} artifact but the teacher is {task}: "
            "compare artifacts made from this teacher"
        )
    steps = " + ".join(str(step.get("type")) for step in manifest.get("steps", []))
    name = f"edgeslim {path.name}"
    limit = int(manifest.get("max_length") or 512)
    return Row(name, "onnx", path / artifacts.MODEL, path, limit, f"edgeslim artifact {path}: {steps}")


# ---- size, parameters, running ------------------------------------------------------------------


def onnx_params(model: Path) -> int:
    """Elements of the model's initializers, each distinct tensor counted once (tied weights)."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    seen: set[str] = set()
    total = 0
    for init in onnx.load(str(model)).graph.initializer:
        array = numpy_helper.to_array(init)
        key = hashlib.sha1(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()
        if key not in seen:
            seen.add(key)
            total += int(array.size)
    return total


def torch_params(model: Any) -> int:
    """Elements of the model's parameters (tied ones once)."""
    return sum(p.numel() for p in model.parameters())


def size_mb(row: Row) -> float:
    """MB (1e6 bytes) on disk: weight files (torch), or the .onnx file and its external data."""
    if row.kind == "torch":
        files = models.weight_files(row.model, allow_pickle=False)
    else:
        files = [p for p in row.model.parent.iterdir() if p.name.startswith(row.model.name) and p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


def torch_predictor(model: Any) -> Predict:
    """feeds -> outputs of a transformers model (eager, inference mode), as numpy."""
    import inspect

    import torch

    accepted = set(inspect.signature(model.forward).parameters)

    def predict(feeds: Feeds) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items() if k in accepted})
        return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}

    return predict


def onnx_predictor(model: Path, threads: int) -> Predict:
    """feeds -> outputs of an onnxruntime session (`threads` intra-op, inter-op 1, spinning off)."""
    from edgeslim import sessions

    sess = bench.session(model, threads)
    return lambda feeds: sessions.run(sess, feeds)


def predictors(rows: list[Row], threads: int, torch_model: Any) -> dict[str, Predict]:
    """A predictor per available row."""
    return {
        r.name: torch_predictor(torch_model) if r.kind == "torch" else onnx_predictor(r.model, threads)
        for r in rows
        if not r.missing
    }


def cell_feeds(row: Row, examples: data.Examples, batch: int, seq: int) -> Feeds:
    """The first `batch` sentences (repeated when fewer) tokenized by the row's tokenizer to exactly `seq`."""
    texts = [examples.texts[i % len(examples)] for i in range(batch)]
    return next(data.batches(row.tokenizer, data.Examples(examples.name, texts), batch, seq, pad_to=seq))


def interleaved(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, np.ndarray]:
    """Latencies in ms per call, round-robin over the calls after `warmup` runs of each."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            began = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - began) * 1e3)
    return {name: np.asarray(t) for name, t in times.items()}


def measure(
    rows: list[Row], torch_model: Any, examples: data.Examples, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per thread count and cell: every row's p50/p90 and ratio to Optimum int8 with a 95% CI."""
    import torch

    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        predict = predictors(rows, threads, torch_model)
        for batch, seq in args.cells:
            print(f"compare: timing batch {batch} x seq {seq}, {threads} thread(s), {args.runs} runs")
            feeds = {r.name: cell_feeds(r, examples, batch, seq) for r in rows if not r.missing}
            calls: dict[str, Callable[[], object]] = {n: partial(p, feeds[n]) for n, p in predict.items()}
            times = interleaved(calls, args.runs, args.warmup)
            for name, ms in times.items():
                ratio, low, high = bench.ratio_ci(ms, times[BASELINE])
                entry = {
                    "model": name,
                    "threads": threads,
                    "batch": batch,
                    "seq": seq,
                    **bench.stats(ms, batch),
                }
                entry.update(ratio=round(ratio, 3), ratio_ci95=[round(low, 3), round(high, 3)])
                results.append({**entry, "samples_ms": [round(float(x), 3) for x in ms]})
    return results


# ---- task metric ----------------------------------------------------------------------------------


def embeddings(predict: Predict, row: Row, texts: list[str], pooling: str) -> np.ndarray:
    """Sentence embeddings (N, H): the model's sentence_embedding, else its token states pooled."""
    rows = []
    examples = data.Examples("texts", texts)
    for feeds in data.batches(row.tokenizer, examples, 32, row.max_length):
        out = predict(feeds)
        if "sentence_embedding" in out:
            rows.append(out["sentence_embedding"])
            continue
        hidden = out.get("last_hidden_state", out.get("token_embeddings"))  # (B, T, H)
        if hidden is None:
            raise InputError(f"{row.name} has no sentence_embedding or token-state output: {sorted(out)}")
        mask = feeds["attention_mask"][..., None].astype(np.float32)  # (B, T, 1)
        rows.append(hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1))
    return np.concatenate(rows)


def score(
    predict: Predict, row: Row, task: str, examples: data.Examples, args: argparse.Namespace
) -> dict[str, Any]:
    """The task metric of one row on the dev sentences, with a bootstrap 95% CI."""
    from edgeslim.metrics import accuracy, bootstrap_ci, cosine_rows, spearman

    fn: Callable[[np.ndarray, np.ndarray], float] = spearman
    if task == "feature-extraction":
        if not examples.pairs or examples.labels is None:
            raise InputError("an embedding teacher is scored on scored sentence pairs: pass --data stsb:dev")
        left = embeddings(predict, row, examples.texts, args.pooling)
        right = embeddings(predict, row, examples.pairs, args.pooling)
        name, gold, pred = "spearman_cosine", np.asarray(data.scores(examples)), cosine_rows(left, right)
    else:
        outs = [predict(f) for f in data.batches(row.tokenizer, examples, 32, row.max_length)]
        logits = np.concatenate([o["logits"] for o in outs])  # (N, labels)
        if task == "regression":
            name, gold, pred = "spearman", np.asarray(data.scores(examples)), logits[:, 0]
        else:
            name, fn = "accuracy", accuracy
            gold, pred = evaluation.label_ids(examples, row.tokenizer), logits.argmax(-1)
    low, high = bootstrap_ci(fn, gold, pred, args.bootstrap)
    return {"name": name, "value": round(fn(gold, pred), 5), "ci95": [round(low, 5), round(high, 5)]}


# ---- the report -----------------------------------------------------------------------------------


def header(result: dict[str, Any]) -> list[str]:
    """Title and the conditions of the run: CPU, threads, versions, method."""
    cpu, env, s = result["cpu"], result["versions"], result["settings"]
    flags = ", ".join(
        f"{f} {'yes' if f in cpu['flags'] else 'no'}" for f in ("avx2", "avx512_vnni", "amx_int8")
    )
    libs = ", ".join(
        f"{k} {env[k]}"
        for k in ("onnxruntime", "torch", "transformers", "optimum", "optimum-onnx", "olive-ai")
        if k in env
    )
    metric = result["metric"]
    return [
        f"# Compare: {result['teacher']} on {result['data']}",
        "",
        f"CPU: {cpu['model']} ({flags}), {cpu['cores']} cores. Threads: {', '.join(map(str, s['threads']))}.",
        f"Versions: {libs}.",
        "",
        f"One process; per cell and thread count every model runs {s['warmup']} warm-up then "
        f"{s['runs']} timed runs, interleaved round-robin. onnxruntime: intra_op_num_threads = threads, "
        "inter-op 1, session.intra_op.allow_spinning 0; PyTorch: torch.set_num_threads(threads), eager, "
        f"inference mode, {s['torch_openmp']}. Inputs: the first B sentences of the data, tokenized by "
        "each model's own tokenizer and padded/truncated to exactly S tokens.",
        f"Ratio: the model's p50 / {BASELINE}'s p50 in the same cell (below 1 = faster), bootstrap 95% CI. "
        f"{metric}: on the same {result['n']} dev examples for every model, bootstrap 95% CI. "
        "Parameters: PyTorch's, or the elements of the distinct ONNX initializers (int8 weights, scales "
        "and zero points included).",
    ]


def table(result: dict[str, Any], batch: int, seq: int) -> list[str]:
    """One markdown table for one cell: a row per model, p50/p90 and ratio per thread count."""
    threads = result["settings"]["threads"]
    cols = ["model", "MB", "parameters"]
    for t in threads:
        cols += [f"{t}t p50 / p90 ms", f"{t}t ratio (95% CI)"]
    cols.append(f"{result['metric']} (95% CI)")
    lines = [
        f"## batch {batch} x seq {seq}",
        "",
        "| " + " | ".join(cols) + " |",
        "|---|" + "---:|" * (len(cols) - 1),
    ]
    timed = {(c["model"], c["threads"]): c for c in result["cells"] if (c["batch"], c["seq"]) == (batch, seq)}
    for row in result["rows"]:
        if row["missing"]:
            lines.append(f"| {row['name']}: {row['missing']} |" + " – |" * (len(cols) - 1))
            continue
        label = f"{row['name']} ({row['variant']})" if row["variant"] else row["name"]
        cells = [label, f"{row['mb']:.2f}", f"{row['params']:,}"]
        for t in threads:
            c = timed[(row["name"], t)]
            low, high = c["ratio_ci95"]
            ratio = "1 (baseline)" if row["name"] == BASELINE else f"{c['ratio']:.2f} [{low:.2f}, {high:.2f}]"
            cells += [f"{c['median_ms']:.2f} / {c['p90_ms']:.2f}", ratio]
        m = row["metric"]
        cells.append(f"{m['value']:.4f} [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    """The whole report: header, a table per cell, how each model was made."""
    lines = [*header(result), ""]
    for batch, seq in result["settings"]["cells"]:
        lines += table(result, batch, seq)
    lines += ["## How each model was made", ""]
    lines += [f"- {r['name']}: {r['missing'] or r['how']}" for r in result["rows"]]
    lines += ["", f"Pareto plot: pareto.png ({result['pareto']})."]
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and y."""

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        better_y = a[1] >= b[1] if higher_is_better else a[1] <= b[1]
        return a[0] <= b[0] and better_y and a != b

    return [i for i, p in enumerate(points) if not any(beats(q, p) for q in points)]


def plot(result: dict[str, Any], path: Path) -> None:
    """Latency vs MB and latency vs metric: a numbered, coloured point per model (legend names
    them), the Pareto front dashed; latency on a log axis when it spans more than 10x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch, seq = result["settings"]["cells"][0]
    threads = result["settings"]["threads"][0]
    p50 = {
        c["model"]: c["median_ms"]
        for c in result["cells"]
        if (c["batch"], c["seq"], c["threads"]) == (batch, seq, threads)
    }
    rows = [r for r in result["rows"] if not r["missing"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    panels = ((axes[0], "MB on disk", False), (axes[1], result["metric"], True))
    for ax, label, higher in panels:
        points = [(p50[r["name"]], r["metric"]["value"] if higher else r["mb"]) for r in rows]
        for number, (row, (x, y)) in enumerate(zip(rows, points, strict=True), 1):
            ax.scatter([x], [y], label=f"{number} {row['name']}", s=40)
            ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
        front = sorted(points[i] for i in pareto_front(points, higher))
        ax.plot(*zip(*front, strict=True), "o--", color="grey", mfc="none", ms=13, label="Pareto front")
        if max(p[0] for p in points) > 10 * min(p[0] for p in points):
            ax.set_xscale("log")
        ax.set_xlabel(f"p50 latency, ms (batch {batch} x seq {seq}, {threads} thread(s))")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{result['teacher']}: latency vs size and vs {result['metric']} on {result['data']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the run --------------------------------------------------------------------------------------


def rows_for(teacher: Path, task: str, torch_model: Any, work: Path, args: argparse.Namespace) -> list[Row]:
    """Every compared model: PyTorch, ORT fp32, Optimum int8, Olive int8, the artifacts."""
    limit = models.max_length(teacher, models.read_config(teacher))
    attention = torch_model.config._attn_implementation
    how = f"transformers {type(torch_model).__name__} from {teacher}, {attention} attention"
    torch_row = Row("PyTorch fp32 eager", "torch", teacher, teacher, limit, how)
    artifact_rows = [artifact_row(Path(a), task) for a in args.artifact]
    for row, given in zip(artifact_rows, args.artifact, strict=True):
        if sum(r.name == row.name for r in artifact_rows) > 1:  # same folder name: say which
            row.name = f"edgeslim {given}"
    print(f"compare: Optimum export and quantization (preset {args.preset})")
    fp32, int8 = build_optimum(teacher, task, work, args.preset)
    if args.no_olive:
        olive = Row("Olive int8", "onnx", work, teacher, limit, "", missing="skipped (--no-olive)")
    else:
        print("compare: Olive conversion and dynamic quantization")
        olive = build_olive(teacher, task, work)
    rows = [torch_row, fp32, int8, olive, *artifact_rows]
    longest = max(seq for _, seq in args.cells)
    for row in rows:
        if not row.missing and longest > row.max_length:
            raise InputError(f"seq {longest} exceeds {row.name}'s max length {row.max_length}: lower --cells")
    return rows


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build, score and time every model; the result as a JSON-able dict."""
    from edgeslim.environment import snapshot

    teacher = models.resolve(args.teacher)
    task = models.head_task(models.read_config(teacher))
    if task == "token-classification":
        raise InputError(
            f"{teacher} is a token classifier: compare handles sequence classifiers and encoders"
        )
    args.pooling = models.default_pooling(teacher)
    columns = (args.text_column, args.pair_column, args.label_column)
    examples = data.load_labelled(args.data, *columns, args.data_dir, args.eval_size)
    if not len(examples):
        raise InputError(f"{args.data} is empty: give data with sentences")
    torch_model = load_torch(teacher, task)
    rows = rows_for(teacher, task, torch_model, work / "models", args)
    scoring = predictors(rows, max(args.threads), torch_model)
    for row in rows:
        if row.missing:
            continue
        row.mb = size_mb(row)
        row.params = onnx_params(row.model) if row.kind == "onnx" else torch_params(torch_model)
        print(f"compare: scoring {row.name} on {len(examples)} examples")
        row.metric = score(scoring[row.name], row, task, examples, args)
    del scoring
    cells = measure(rows, torch_model, examples, args)
    env = snapshot()
    versions = dict(env["versions"])  # type: ignore[call-overload]
    olive = next(r for r in rows if r.name == "Olive int8")
    if not olive.missing:
        from importlib.metadata import version

        versions["olive-ai"] = version("olive-ai")

    def final(path: Path) -> str:  # built models are recorded where they will be after the rename
        return str(args.out / path.relative_to(work)) if path.is_relative_to(work) else str(path)

    first = f"batch {args.cells[0][0]} x seq {args.cells[0][1]}, {args.threads[0]} thread(s)"
    return {
        "schema": SCHEMA,
        "teacher": args.teacher,
        "task": task,
        "data": examples.name,
        "n": len(examples),
        "metric": rows[0].metric["name"],
        "baseline": BASELINE,
        "optimum_preset": args.preset,
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "cells": args.cells,
            "threads": args.threads,
            "spinning": False,
            "torch_openmp": args.openmp,
            "inter_op_threads": 1,
            "bootstrap": args.bootstrap,
        },
        "rows": [{**r.__dict__, "model": final(r.model), "tokenizer": final(r.tokenizer)} for r in rows],
        "cells": cells,
        "pareto": f"p50 at {first}",
        "cpu": env["cpu"],
        "versions": versions,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--teacher", required=True, help="fine-tuned HF folder, or a packaged name (minilm)")
    p.add_argument("--artifact", action="append", default=[], help="edgeslim artifact folder (repeatable)")
    p.add_argument("--data", default="sst2:dev", help="dev data: built-in name or file (stsb:dev for minilm)")
    p.add_argument("--data-dir", type=Path, default=None, help="where built-in data sets live")
    p.add_argument("--text-column", default=None)
    p.add_argument("--pair-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--eval-size", type=int, default=None, help="score on the first N examples (default all)")
    p.add_argument("--out", type=Path, default=Path("out/compare"), help="output folder")
    p.add_argument("--force", action="store_true", help="replace an earlier compare output folder")
    p.add_argument("--runs", type=int, default=40, help="timed runs per model per cell")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs per model per cell")
    p.add_argument("--cells", default="b1s128,b1s32,b8s128", help="batch x seq cells, e.g. b1s128,b8s128")
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap resamples for the CIs")
    p.add_argument(
        "--preset",
        default=None,
        choices=["avx2", "avx512", "avx512_vnni", "arm64"],
        help="Optimum preset (default: from this CPU's flags)",
    )
    p.add_argument("--no-olive", action="store_true", help="leave Olive out")
    args = p.parse_args(argv)
    args.cells, args.threads = parse_cells(args.cells), parse_threads(args.threads)
    if args.runs < 2 or args.warmup < 0 or (args.eval_size is not None and args.eval_size < 1):
        raise InputError("--runs must be at least 2, --warmup at least 0, --eval-size at least 1")
    if args.bootstrap < 10:
        raise InputError("--bootstrap must be at least 10 resamples")
    args.preset = args.preset or optimum_preset(hardware.detect())
    return args


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing output unless --force and it is an earlier compare output."""
    if not out.exists():
        return
    if not force:
        raise OutputError(f"{out} already exists: choose another --out or pass --force to replace it")
    if not (out / "compare.json").is_file():
        raise OutputError(f"{out} exists and was not written by compare: choose another --out")


def passive_openmp() -> str:
    """Ask PyTorch's OpenMP workers to sleep, not spin, between ops (onnxruntime's spinning is off
    too): a spinning worker takes a core from the next model in the round-robin. libgomp reads
    OMP_WAIT_POLICY once, when torch loads; returns what is in effect, for the report."""
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (set by the caller)"
    if "torch" in sys.modules:
        return "OpenMP's default wait policy (torch was loaded before compare could set OMP_WAIT_POLICY)"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "OMP_WAIT_POLICY=PASSIVE"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; a one-line error and edgeslim's exit code on bad input."""
    tmp: Path | None = None
    openmp = passive_openmp()
    try:
        args = parse(argv)
        args.openmp = openmp
        check_out(args.out, args.force)
        for artifact in args.artifact:
            artifacts.read_manifest(Path(artifact))  # fail on a bad path before minutes of work
        tmp = args.out.parent / f".{args.out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        result = run(args, tmp)
        artifacts.write_json(tmp / "compare.json", result)
        (tmp / "compare.md").write_text(markdown(result))
        plot(result, tmp / "pareto.png")
        if args.out.exists():
            old = args.out.parent / f".{args.out.name}.old-{os.getpid()}"
            args.out.rename(old)
            shutil.rmtree(old)
        tmp.rename(args.out)
        tmp = None
    except EdgeslimError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print((args.out / "compare.md").read_text())
    print(f"compare: wrote {args.out}/compare.md, compare.json, pareto.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
