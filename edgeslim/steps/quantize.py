"""quantize: dynamic / static int8, weight-only 2/4/8-bit, fp16; fidelity; accuracy budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from edgeslim import artifacts, models, ui
from edgeslim.config import StepConfig
from edgeslim.errors import InputError
from edgeslim.flags import ArtifactArg, DryRun, Force, Output
from edgeslim.options import field_option

Quantizer = Callable[[list[str], Path], None]  # (nodes to keep fp32, output path)
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu", "BiasFastGelu", "QuickGelu")


class Config(StepConfig):
    """Quantization mode and its settings; None means the hardware-aware default."""

    type: Literal["quantize"] = "quantize"
    host_dependent: ClassVar[bool] = True  # its result depends on the CPU it runs on
    mode: Literal["dynamic", "static", "weight-only", "fp16"] = Field("dynamic", description="Scheme.")
    per_channel: bool | None = Field(None, description="Per-channel weight scales (default: yes).")
    reduce_range: bool | None = Field(None, description="7-bit weights (default: x86 without VNNI).")
    quantize_embeddings: bool = Field(
        True,
        description="Quantize the embedding tables too: fused EmbedLayerNormalization -> "
        "QEmbedLayerNormalization (int8), an unfused Gather -> int8 (weight-only: `bits`).",
    )
    quantize_attention: bool = Field(True, description="dynamic: fused Attention -> QAttention.")
    exclude_nodes: tuple[str, ...] = Field((), description="Node names kept in fp32.")
    exclude_op_types: tuple[str, ...] = Field((), description="Op types kept in fp32.")
    calib: str = Field("sst2:train", description="static: calibration data (built-in name or file).")
    calib_size: int = Field(256, gt=0, description="static: calibration samples.")
    calib_batch_size: int = Field(16, gt=0, description="static: samples per calibration batch.")
    text_column: str | None = Field(None, description="Text column of user data files.")
    pair_column: str | None = Field(None, description="Second-text column of user data files.")
    label_column: str | None = Field(None, description="Label column of the --eval file.")
    data_dir: Path | None = Field(None, description="Where built-in datasets live.")
    method: Literal["minmax", "entropy", "percentile", "distribution"] = Field(
        "minmax", description="static: calibration method."
    )
    format: Literal["qdq", "qoperator"] = Field("qdq", description="static: graph format.")
    activation_type: Literal["U8", "S8"] | None = Field(None, description="static: activation type.")
    symmetric_activations: bool = Field(False, description="static: symmetric activation ranges.")
    keep_post_gelu_fp32: bool = Field(
        True, description="static: MatMuls fed by GELU stay fp32 (long-tailed inputs quantize badly)."
    )
    bits: Literal[2, 4, 8] = Field(4, description="weight-only: bits per weight.")
    block_size: int = Field(32, ge=16, description="weight-only: weights per scale block.")
    symmetric: bool = Field(True, description="weight-only: symmetric blocks (no zero point).")
    algorithm: Literal["rtn", "hqq"] = Field("rtn", description="weight-only: rounding algorithm.")
    keep_io_types: bool = Field(True, description="fp16: keep fp32 inputs and outputs.")
    fidelity_data: str = Field("sst2:dev", description="Real inputs for the fidelity report.")
    fidelity_size: int = Field(200, gt=0, description="Fidelity samples.")
    max_drop: float | None = Field(None, ge=0, description="Max metric drop; excludes nodes to meet it.")
    eval: str | None = Field(None, description="Labelled data for --max-drop.")
    max_fp32_nodes: int | None = Field(
        None, ge=0, description="--max-drop: keep at most this many nodes fp32."
    )
    eval_size: int | None = Field(None, gt=0, description="Limit --eval samples.")


def _two_bit_export(manifest: dict[str, Any]) -> bool:
    """An export of a binarize output: its low-bit layers are 2-bit MatMulNBits, the rest fp32."""
    export: dict[str, Any] = next((s for s in manifest["steps"] if s.get("type") == "export"), {})
    layers = (export.get("lowbit") or {}).get("layers", {})
    return bool(layers) and all(layer["scheme"] in ("ternary", "binary") for layer in layers.values())


def _check_input(src: Path, manifest: dict[str, Any], cfg: Config) -> list[str]:
    """Refuse already-quantized graphs; return notes (e.g. unoptimized input)."""
    from edgeslim import inspection

    graph = inspection.load_graph(src / artifacts.MODEL)
    ops = {n.op_type for n in graph.graph.node}
    if _two_bit_export(manifest) and cfg.mode == "dynamic":  # int8 for what binarize left fp32
        ops -= {"MatMulNBits"}
    if ops & set(inspection.QUANT_OPS) or any(s.get("type") == "quantize" for s in manifest["steps"]):
        raise InputError(f"{src} is already quantized: quantize the fp32 (optimized) artifact instead")
    config = models.read_config(src)
    _check_exclusions(graph.graph, cfg)
    notes = []
    if cfg.mode == "weight-only" and "Attention" in ops:
        notes.append(
            "fused Attention keeps its Q/K/V weights in fp32 (MatMulNBits covers MatMul "
            "only): for the smallest file, optimize with --no-fuse-attention first"
        )
    fused = {"Attention", "SkipLayerNormalization"} & ops
    if cfg.mode in ("dynamic", "static") and models.arch_of(config).fuses_attention and not fused:
        notes.append(
            "input is not optimized: run 'edgeslim optimize' first; fused Attention and "
            "LayerNorm make int8 faster and quantize more accurately"
        )
    return notes


def _check_exclusions(graph: Any, cfg: Config) -> None:
    """--exclude names graph nodes and --exclude-op graph op types: a typo would exclude nothing."""
    import difflib

    for given, known, what, flag in (
        (cfg.exclude_nodes, [n.name for n in graph.node], "node", "--exclude"),
        (cfg.exclude_op_types, sorted({n.op_type for n in graph.node}), "op type", "--exclude-op"),
    ):
        for name in given:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else "see 'edgeslim inspect' for the graph"
                listed = f"; op types in the graph: {', '.join(known)}" if what == "op type" else ""
                raise InputError(f"{flag} {name}: no {what} '{name}' in the graph ({hint}){listed}")


def _ops_to_nodes(src: Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the nodes of `op_types` (for quantizers that only take node names)."""
    from edgeslim import inspection

    if not op_types:
        return []
    return [n.name for n in inspection.load_graph(src / artifacts.MODEL).graph.node if n.op_type in op_types]


def _embedding_op(src: Path, cfg: Config) -> str | None:
    """The op type holding the embedding tables, when they are to be quantized (else None).

    Fused graphs keep them in EmbedLayerNormalization, unfused ones in Gather; --exclude-op
    of that op type keeps them fp32."""
    from edgeslim import inspection

    if not cfg.quantize_embeddings or cfg.mode == "fp16":
        return None
    ops = {n.op_type for n in inspection.load_graph(src / artifacts.MODEL).graph.node}
    op = "EmbedLayerNormalization" if "EmbedLayerNormalization" in ops else "Gather"
    return None if op in cfg.exclude_op_types or op not in ops else op


def _quantizer(
    src: Path, cfg: Config, work: Path, defaults: dict[str, Any], external: bool, calib: Any
) -> Quantizer:
    """A function (exclude, dst) -> None for cfg.mode, with calibration (on `calib`) done once.

    Embedding tables: dynamic int8 turns fused EmbedLayerNormalization into
    QEmbedLayerNormalization in its one pass. Static int8 and weight-only have no quantized
    fused form, so a second pass of onnxruntime's quantize_dynamic over that op alone does it
    there (measured against the alternatives, an int8 table behind DequantizeLinear, fused or
    unfused: onnxruntime does not fold that DequantizeLinear at load; README, "Small
    embeddings"). Unfused graphs quantize their Gather in the mode's own pass."""
    from edgeslim import quantization

    embeddings = _embedding_op(src, cfg)
    fused_pass = embeddings == "EmbedLayerNormalization" and cfg.mode != "dynamic"
    quantize = _base_quantizer(src, cfg, work, defaults, external, calib, None if fused_pass else embeddings)
    if not fused_pass:
        return quantize

    def with_embeddings(exclude: list[str], dst: Path) -> None:
        first = work / "without-embeddings.onnx"
        quantize(exclude, first)
        # no pre-processing: its shape inference does not know the ops the first pass made
        quantization.dynamic(
            first, dst, ["EmbedLayerNormalization"], True, False, list(cfg.exclude_nodes) + exclude, external
        )
        for path in work.glob("without-embeddings.onnx*"):
            path.unlink()

    return with_embeddings


def _base_quantizer(
    src: Path,
    cfg: Config,
    work: Path,
    defaults: dict[str, Any],
    external: bool,
    calib: Any,
    embeddings: str | None,
) -> Quantizer:
    """A function (exclude, dst) -> None for cfg.mode, with calibration (on `calib`) done once;
    `embeddings` is the op type holding the tables to quantize in the same pass, if any."""
    from edgeslim import data, quantization

    per_channel = defaults["per_channel"] if cfg.per_channel is None else cfg.per_channel
    reduce_range = defaults["reduce_range"] if cfg.reduce_range is None else cfg.reduce_range
    base = list(cfg.exclude_nodes)
    if cfg.mode in ("fp16", "weight-only"):
        base += _ops_to_nodes(src, cfg.exclude_op_types)
    if cfg.mode == "fp16":
        return lambda exclude, dst: quantization.fp16(
            src / artifacts.MODEL, dst, cfg.keep_io_types, external, base + exclude
        )
    if cfg.mode == "weight-only":
        return lambda exclude, dst: quantization.weight_only(
            src / artifacts.MODEL,
            dst,
            cfg.bits,
            cfg.block_size,
            cfg.symmetric,
            cfg.algorithm,
            embeddings == "Gather",
            base + exclude,
            external,
        )
    pre = work / "preprocessed.onnx"
    quantization.preprocess(src / artifacts.MODEL, pre, external)
    # Gemm: the classification heads (2-D inputs) export as Gemm rather than MatMul.
    op_types = ["MatMul", "Gemm"] + ([embeddings] if embeddings else [])
    if cfg.mode == "dynamic":
        op_types += ["Attention"] if cfg.quantize_attention else []
        op_types = [o for o in op_types if o not in cfg.exclude_op_types]
        return lambda exclude, dst: quantization.dynamic(
            pre, dst, op_types, per_channel, reduce_range, base + exclude, external
        )
    op_types = [o for o in op_types if o not in cfg.exclude_op_types]
    examples = calib
    if len(examples) < cfg.calib_size:
        ui.note(
            f"warning: {cfg.calib} has {len(examples)} samples, fewer than --calib-size "
            f"{cfg.calib_size}; calibrating on all of them"
        )
    max_len = artifacts.max_length(artifacts.read_manifest(src))
    batches = data.batches(src, examples.head(cfg.calib_size), cfg.calib_batch_size, max_len)
    total = -(-min(len(examples), cfg.calib_size) // cfg.calib_batch_size)
    ranges = quantization.calibrate(
        pre,
        ui.progress(batches, total, f"calibrating ({cfg.method})"),
        cfg.method,
        op_types,
        cfg.symmetric_activations,
        external,
        work,
    )
    activation = cfg.activation_type or str(defaults["activation_type"])
    if cfg.keep_post_gelu_fp32:
        base += _post_gelu_matmuls(pre)
    return lambda exclude, dst: quantization.static(
        pre,
        dst,
        ranges,
        cfg.format,
        op_types,
        per_channel,
        reduce_range,
        activation,
        str(defaults["weight_type"]),
        cfg.symmetric_activations,
        base + exclude,
        external,
        work,
    )


def _post_gelu_matmuls(model: Path) -> list[str]:
    """Names of MatMuls whose input is a GELU output (the FFN output projections)."""
    from edgeslim import inspection

    graph = inspection.load_graph(model).graph
    gelu_out = {n.output[0] for n in graph.node if n.op_type in GELU_OPS}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[0] in gelu_out]


def _layer_label(tensor: str) -> str:
    """'/model/encoder/layer.4/attention/output/LayerNorm/...' -> 'L4.attn' (else the name)."""
    import re

    match = re.search(r"layer\.(\d+)/(attention|output)", tensor)
    if match:
        return f"L{match.group(1)}.{'attn' if match.group(2) == 'attention' else 'ffn'}"
    return "embeddings" if "embeddings" in tensor or "EmbedLayerNorm" in tensor else tensor


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Quantize artifact `src` into `out`; report fidelity; meet --max-drop when given."""
    from edgeslim import data, evaluation, hardware, quant_search, quantization

    manifest = artifacts.read_manifest(src)
    notes = _check_input(src, manifest, cfg)
    target = hardware.detect()
    defaults = hardware.int8_defaults(target)
    activation = cfg.activation_type or str(defaults["activation_type"])
    if cfg.mode in ("dynamic", "static"):
        warning = hardware.int8_speed_warning(target, activation if cfg.mode == "static" else "U8")
        if warning:
            notes.append(warning)
    if cfg.mode == "weight-only":
        notes.append(
            "weight-only is a size win, not a speed win, on CPU: MatMulNBits was not faster "
            "than fp32 at b1 s128 here"
        )
    if cfg.mode == "fp16" and target.arch in ("x86", "arm"):
        notes.append("fp16 targets GPU execution providers; on the CPU provider it is usually slower")
    # Every data set is read, validated and tokenized before any work: a bad file fails in seconds.
    evaluation_set = quant_search.load_eval(src, cfg) if cfg.max_drop is not None else None
    calib = None
    if cfg.mode == "static":
        calib = data.load(cfg.calib, cfg.text_column, cfg.pair_column, None, cfg.data_dir)
        evaluation.feeds_for(src, calib.head(cfg.calib_size))  # tokenizer checks, fast
    examples = data.load(cfg.fidelity_data, cfg.text_column, cfg.pair_column, None, cfg.data_dir)
    feeds = evaluation.feeds_for(src, examples.head(cfg.fidelity_size))
    for note in notes:
        ui.note(f"note: {note}")
    external = len(artifacts.model_files(src)) > 1
    start = time.perf_counter()
    with artifacts.scratch("quantize") as work, ui.quiet_logs():
        quantize = _quantizer(src, cfg, work, defaults, external, calib)
        quantize([], out / artifacts.MODEL)
        search = None
        if evaluation_set is not None:
            search = quant_search.meet_drop(src, out, cfg, quantize, work, evaluation_set)
    duration = time.perf_counter() - start
    artifacts.copy_companions(src, out)
    fidelity = evaluation.compare(
        evaluation.outputs(src / artifacts.MODEL, feeds),
        evaluation.outputs(out / artifacts.MODEL, feeds),
        feeds,
    )
    layers = quantization.layer_sqnr(
        src / artifacts.MODEL, out / artifacts.MODEL, feeds[:2], 10 if cfg.mode == "fp16" else 1
    )
    size, size_src = artifacts.artifact_size(out), artifacts.artifact_size(src)
    step = {
        "type": "quantize",
        "config": cfg.model_dump(mode="json"),
        "hardware": target.name,
        "defaults": defaults,
        "notes": notes,
        "fidelity": fidelity,
        "layer_sqnr": layers,
        "fidelity_data": {"name": cfg.fidelity_data, "n": min(len(examples), cfg.fidelity_size)},
        "size_bytes": size,
        "size_ratio": round(size / size_src, 4),
        "search": search,
        "duration_s": round(duration, 3),
    }
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    summary: dict[str, Any] = {
        "mode": cfg.mode,
        "hardware": target.name,
        "size_mb": round(size / 1e6, 2),
        "size_ratio": step["size_ratio"],
        **{f"{k}.{m}": v for k, e in fidelity.items() for m, v in e.items()},
    }
    if layers:
        summary["sqnr_db"] = ", ".join(f"{_layer_label(r['tensor'])} {r['sqnr_db']}" for r in layers)
    worst = min(layers, key=lambda r: r["sqnr_db"], default=None)
    if worst:
        summary["worst_layer"] = f"{worst['tensor']} ({worst['sqnr_db']} dB)"
    if search:
        summary.update(
            kept_fp32=len(search["excluded"]), drop=search["drop"], drop_selection=search["selection"]["drop"]
        )
        if not search["met"]:
            summary["budget_not_met"] = (
                f"accuracy drop {search['drop']:.4f} on the held-out half of --eval > --max-drop "
                f"{cfg.max_drop} with {len(search['excluded'])} nodes in fp32; wrote the best artifact found"
            )
    return summary


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    artifact: ArtifactArg,
    output: Output,
    mode: Annotated[str | None, _option("mode")] = None,
    per_channel: Annotated[bool | None, _option("per_channel", "--per-channel/--per-tensor")] = None,
    reduce_range: Annotated[bool | None, _option("reduce_range", "--reduce-range/--full-range")] = None,
    quantize_embeddings: Annotated[
        bool | None, _option("quantize_embeddings", "--embeddings/--no-embeddings")
    ] = None,
    quantize_attention: Annotated[
        bool | None, _option("quantize_attention", "--attention/--no-attention")
    ] = None,
    exclude_nodes: Annotated[list[str] | None, _option("exclude_nodes", "--exclude")] = None,
    exclude_op_types: Annotated[list[str] | None, _option("exclude_op_types", "--exclude-op")] = None,
    calib: Annotated[str | None, _option("calib")] = None,
    calib_size: Annotated[int | None, _option("calib_size")] = None,
    calib_batch_size: Annotated[int | None, _option("calib_batch_size")] = None,
    method: Annotated[str | None, _option("method")] = None,
    format: Annotated[str | None, _option("format")] = None,
    activation_type: Annotated[str | None, _option("activation_type")] = None,
    symmetric_activations: Annotated[bool | None, _option("symmetric_activations")] = None,
    keep_post_gelu_fp32: Annotated[bool | None, _option("keep_post_gelu_fp32")] = None,
    bits: Annotated[int | None, _option("bits")] = None,
    block_size: Annotated[int | None, _option("block_size")] = None,
    symmetric: Annotated[bool | None, _option("symmetric", "--symmetric/--asymmetric")] = None,
    algorithm: Annotated[str | None, _option("algorithm")] = None,
    keep_io_types: Annotated[bool | None, _option("keep_io_types", "--keep-io-types/--fp16-io")] = None,
    text_column: Annotated[str | None, _option("text_column")] = None,
    pair_column: Annotated[str | None, _option("pair_column")] = None,
    label_column: Annotated[str | None, _option("label_column")] = None,
    data_dir: Annotated[Path | None, _option("data_dir")] = None,
    fidelity_data: Annotated[str | None, _option("fidelity_data")] = None,
    fidelity_size: Annotated[int | None, _option("fidelity_size")] = None,
    max_drop: Annotated[float | None, _option("max_drop")] = None,
    eval: Annotated[str | None, _option("eval", "--eval")] = None,
    eval_size: Annotated[int | None, _option("eval_size")] = None,
    max_fp32_nodes: Annotated[int | None, _option("max_fp32_nodes")] = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Quantize an artifact (int8 dynamic/static, 2/4/8-bit weight-only, fp16) and report fidelity."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        mode=mode,
        per_channel=per_channel,
        reduce_range=reduce_range,
        quantize_embeddings=quantize_embeddings,
        quantize_attention=quantize_attention,
        exclude_nodes=tuple(exclude_nodes) if exclude_nodes else None,
        exclude_op_types=tuple(exclude_op_types) if exclude_op_types else None,
        calib=calib,
        calib_size=calib_size,
        calib_batch_size=calib_batch_size,
        method=method,
        format=format,
        activation_type=activation_type,
        symmetric_activations=symmetric_activations,
        keep_post_gelu_fp32=keep_post_gelu_fp32,
        bits=bits,
        block_size=block_size,
        symmetric=symmetric,
        algorithm=algorithm,
        keep_io_types=keep_io_types,
        text_column=text_column,
        pair_column=pair_column,
        label_column=label_column,
        data_dir=data_dir,
        fidelity_data=fidelity_data,
        fidelity_size=fidelity_size,
        max_drop=max_drop,
        eval=eval,
        eval_size=eval_size,
        max_fp32_nodes=max_fp32_nodes,
    )
    run_single(artifact, cfg, output, force, dry_run)
