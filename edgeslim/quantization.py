"""Quantization with onnxruntime's tooling; written here only what it lacks:

- bounded-memory calibration: onnxruntime's calibrators keep every activation of every
  sample until the end (users report hundreds of GB); we feed them one batch per
  `collect_data` call (MinMax merges ranges, histogram methods merge histograms per call),
  and hand the ranges to `quantize_static` through its calibration cache. One batch per call
  also avoids the Percentile/Entropy crash on samples of different lengths
  ("inhomogeneous shape"), since each call sees one array per tensor.
- intermediate-tensor comparison (per-layer SQNR, per-node sensitivity).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.defaults import EXTERNAL_DATA_MB
from edgeslim.metrics import sqnr_db

Feeds = dict[str, np.ndarray]


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    """Run with `directory` as the working directory (restored after)."""
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(src: Path, dst: Path, external: bool) -> None:
    """Symbolic shape inference, no optimization: without it quantize_dynamic fails on fused
    graphs ("Unable to find data type for weight_name") and quantize_static silently
    quantizes weights only (shared/MEASURED.md).

    Runs inside dst's (temporary) folder: quant_pre_process's failed first attempt on
    unfused graphs left a stray <uuid>.data file in the working directory."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeslim.environment import hidden

    with hidden("torch"):  # see hidden(): torch is not needed to infer shapes
        import onnxruntime.tools  # noqa: F401
    src, dst = src.resolve(), dst.resolve()
    options = {"skip_optimization": True, "save_as_external_data": external, "all_tensors_to_one_file": True}
    with _inside(dst.parent):
        try:
            quant_pre_process(str(src), str(dst), **options)
        except Exception:  # "Incomplete symbolic shape inference" on graphs with unfused attention
            # auto_merge reconciles the symbolic dims its Reshape/Concat chains produce.
            quant_pre_process(str(src), str(dst), auto_merge=True, **options)


def dynamic(
    pre: Path,
    out: Path,
    op_types: list[str],
    per_channel: bool,
    reduce_range: bool,
    exclude: list[str],
    external: bool,
) -> None:
    """Dynamic int8: u8 activations quantized at run time, s8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(pre),
        str(out),
        op_types_to_quantize=op_types,
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        use_external_data_format=external,
        extra_options={"MatMulConstBOnly": True},
    )


class _OneBatch:
    """A CalibrationDataReader that yields a single batch."""

    def __init__(self, feeds: Feeds) -> None:
        self.feeds: Feeds | None = feeds

    def get_next(self) -> Feeds | None:
        feeds, self.feeds = self.feeds, None
        return feeds


def calibrate(
    pre: Path,
    feeds: Iterable[Feeds],
    method: str,
    op_types: list[str],
    symmetric: bool,
    external: bool,
    work: Path,
) -> Any:
    """Activation ranges (TensorsData) from batches, holding one batch's activations at a time."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibration = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }[method]
    options: dict[str, Any] = {"symmetric": symmetric} if method != "distribution" else {}
    calibrator = create_calibrator(
        pre,
        op_types,
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=calibration,
        use_external_data_format=external,
        providers=["CPUExecutionProvider"],
        extra_options=options,
    )
    for batch in feeds:
        names = {i.name for i in calibrator.infer_session.get_inputs()}
        with contextlib.redirect_stdout(io.StringIO()):  # it prints once per call
            calibrator.collect_data(_OneBatch({k: v for k, v in batch.items() if k in names}))
    with contextlib.redirect_stdout(io.StringIO()):
        return calibrator.compute_data()


def static(
    pre: Path,
    out: Path,
    ranges: Any,
    fmt: str,
    op_types: list[str],
    per_channel: bool,
    reduce_range: bool,
    activation: str,
    weight: str,
    symmetric_activations: bool,
    exclude: list[str],
    external: bool,
    work: Path,
) -> None:
    """Static int8 (QDQ or QOperator) from precomputed ranges, via quantize_static's cache."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    cache = work / "calibration.json"
    save_tensors_data(ranges, cache)
    types = {"U8": QuantType.QUInt8, "S8": QuantType.QInt8}
    quantize_static(
        str(pre),
        str(out),
        calibration_data_reader=None,
        calibration_cache_path=str(cache),
        calibrate_method=ranges.calibration_method,
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=op_types,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=types[activation],
        weight_type=types[weight],
        nodes_to_exclude=exclude,
        use_external_data_format=external,
        extra_options={
            "ActivationSymmetric": symmetric_activations,
            "WeightSymmetric": True,
            "MatMulConstBOnly": True,
        },
    )


def weight_only(
    src: Path,
    out: Path,
    bits: int,
    block_size: int,
    symmetric: bool,
    algorithm: str,
    embeddings: bool,
    exclude: list[str],
    external: bool,
) -> None:
    """MatMulNBits (and GatherBlockQuantized for embeddings): weights in 2/4/8 bits, blocks."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    def quantize(model: Any, op_types: tuple[str, ...], algorithm: str) -> Any:
        axes = (("MatMul", 0), ("Gather", 1))
        config: Any
        if algorithm == "hqq":
            config = HQQWeightOnlyQuantConfig(
                block_size=block_size, bits=bits, op_types_to_quantize=op_types, quant_axes=axes
            )
        else:
            config = DefaultWeightOnlyQuantConfig(
                block_size=block_size,
                is_symmetric=symmetric,
                bits=bits,
                op_types_to_quantize=op_types,
                quant_axes=axes,
            )
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=bits,
            block_size=block_size,
            is_symmetric=symmetric,
            nodes_to_exclude=exclude,
            op_types_to_quantize=op_types,
            quant_axes=axes,
            algo_config=config,
        )
        quantizer.process()
        return quantizer.model

    # onnxruntime's HQQ quantizes MatMul only (its Gather path is RTN's): HQQ for the MatMuls,
    # then RTN for the embedding tables.
    if algorithm == "hqq":
        model = quantize(onnx.load(str(src)), ("MatMul",), "hqq")
        if embeddings:
            model = quantize(model.model, ("Gather",), "rtn")
    else:
        model = quantize(onnx.load(str(src)), ("MatMul", "Gather") if embeddings else ("MatMul",), "rtn")
    model.save_model_to_file(str(out), use_external_data_format=external)


def fp16(src: Path, out: Path, keep_io_types: bool, external: bool, exclude: list[str] | None = None) -> None:
    """Float16 weights and compute (for GPU providers), fp32 inputs/outputs when asked; nodes in
    `exclude` stay fp32."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    blocked = {"node_block_list": exclude} if exclude else {}
    model.convert_float_to_float16(keep_io_types=keep_io_types, use_symbolic_shape_infer=True, **blocked)
    model.save_model_to_file(str(out), use_external_data_format=external)


def tensor_outputs(
    model: Path, names: list[str], batches: list[Feeds], elem_type: int = 1
) -> dict[str, list[np.ndarray]]:
    """Run `model` with intermediate tensors `names` exposed as outputs; per name, per batch."""
    import onnx

    from edgeslim import artifacts, sessions

    graph = onnx.load(str(model))
    present = {o for node in graph.graph.node for o in node.output}
    wanted = [n for n in names if n in present]
    existing = {o.name for o in graph.graph.output}
    for name in wanted:
        if name not in existing:
            graph.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    with artifacts.scratch("probe") as tmp:
        path = tmp / "probe.onnx"
        # External data only past protobuf's 2 GB limit: onnx's external-data writer resolves
        # paths against the working directory and left stray <uuid>.data files there.
        large = graph.ByteSize() > EXTERNAL_DATA_MB * 1e6
        onnx.save_model(
            graph,
            str(path),
            save_as_external_data=large,
            all_tensors_to_one_file=True,
            location="probe.onnx_data",
        )
        sess = sessions.session(path)
        result: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
        for feeds in batches:
            outs = sessions.run(sess, feeds)
            for name in wanted:
                result[name].append(np.asarray(outs[name], dtype=np.float32))
    return result


def _sqnr_lists(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return sqnr_db(np.concatenate([x.ravel() for x in a]), np.concatenate([y.ravel() for y in b]))


def layer_sqnr(
    reference: Path, quantized: Path, batches: list[Feeds], q_elem_type: int = 1
) -> list[dict[str, Any]]:
    """SQNR (dB) of every residual LayerNorm output, in graph order: where quality is lost."""
    import onnx

    ref_graph = onnx.load(str(reference), load_external_data=False)
    norms = [
        n.output[0]
        for n in ref_graph.graph.node
        if n.op_type
        in (
            "SkipLayerNormalization",
            "LayerNormalization",
            "EmbedLayerNormalization",
            "SkipSimplifiedLayerNormalization",
        )
    ]
    ref = tensor_outputs(reference, norms, batches)
    got = tensor_outputs(quantized, norms, batches, q_elem_type)
    rows = []
    for index, name in enumerate(n for n in norms if n in ref and n in got):
        rows.append({"index": index, "tensor": name, "sqnr_db": round(_sqnr_lists(ref[name], got[name]), 2)})
    return rows


def node_sensitivity(
    reference: Path, quantized: Path, batches: list[Feeds], op_types: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Per quantizable node: dB of SQNR it loses (input SQNR minus output SQNR), worst first."""
    import onnx

    graph = onnx.load(str(reference), load_external_data=False)
    nodes = [n for n in graph.graph.node if n.op_type in op_types]
    # EmbedLayerNormalization's first input is token ids (int32), not an activation to compare
    activations = {n.input[0] for n in nodes if n.op_type != "EmbedLayerNormalization"}
    names = sorted({n.output[0] for n in nodes} | activations)
    ref = tensor_outputs(reference, names, batches)
    got = tensor_outputs(quantized, names, batches)
    inputs = {i.name for i in graph.graph.input}
    rows = []
    for node in nodes:
        out, inp = node.output[0], node.input[0]
        if out not in ref or out not in got:
            continue
        compared = inp in names and inp in got and inp not in inputs
        in_db = min(100.0, _sqnr_lists(ref[inp], got[inp])) if compared else 100.0
        out_db = min(100.0, _sqnr_lists(ref[out], got[out]))
        rows.append(
            {
                "node": node.name,
                "op": node.op_type,
                "loss_db": round(in_db - out_db, 2),
                "sqnr_db": round(out_db, 2),
            }
        )
    return sorted(rows, key=lambda r: (-r["loss_db"], r["node"]))
