"""A low-bit model's fp32 ONNX export -> the graph onnxruntime runs low-bit:

- int8 (QAT) layers: QuantizeLinear/DequantizeLinear on the input with the learned step
  (int8, zero point 0) and an int8 weight per output channel behind a DequantizeLinear, so
  that onnxruntime's graph optimizer runs each on an int8 kernel (MatMulIntegerToFloat). A
  2-D Linear (pooler, classifier) exports as Gemm with an fp32 bias; onnxruntime leaves that
  DequantizeLinear -> Gemm in fp32 (measured with onnxruntime 1.32; without the bias it makes
  a QGemm; tests/test_lowbit.py keeps both facts), so it becomes Unsqueeze -> MatMul -> Add ->
  Squeeze, which onnxruntime runs as MatMulIntegerToFloat.
- ternary/binary layers: com.microsoft MatMulNBits with bits=2, the codes packed by hand
  (code = value / scale + 2 in {1, 2, 3}, four to a byte, low bits first; onnxruntime's
  default zero point 2; the row's scale repeated over its blocks; any K, the last block padded
  with zeros), which holds the trained weights exactly. onnxruntime's own 2-bit quantizer
  would re-round them, so INT2 DequantizeLinear initializers (opset 25) are never needed here.

Each layer is found by its weight: the initializer equal to the PyTorch weight (MatMul: W^T;
Gemm with transB: W).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeslim.errors import InputError

MS_DOMAIN = "com.microsoft"
# MatMulNBits' block size: a power of two >= 16 dividing K; the largest up to this.
MAX_BLOCK = 128


def block_size(k: int) -> int:
    """The MatMulNBits block size for K input features: the largest power of two from 16 to 128
    that divides K, else 16 (the last block is then padded with zero codes, which onnxruntime
    accepts: measured exact with K=37)."""
    size = MAX_BLOCK
    while size >= 16:
        if k % size == 0:
            return size
        size //= 2
    return 16


def pack_2bit(codes: Any, scale: Any) -> tuple[Any, Any, int]:
    """(N, K) codes in {-1, 0, 1} and N scales -> (B uint8 [N, blocks, bs/4], scales [N * blocks], bs):
    code + 2 four to a byte, low bits first, the last block padded with 2 (zero)."""
    import numpy as np

    n, k = codes.shape
    size = block_size(k)
    blocks = -(-k // size)
    values = np.full((n, blocks * size), 2, dtype=np.uint8)
    values[:, :k] = (np.asarray(codes, dtype=np.int64) + 2).astype(np.uint8)  # 1, 2, 3
    if values.min() < 1 or values.max() > 3:
        raise InputError("2-bit codes must be -1, 0 or 1")
    quads = values.reshape(n, -1, 4)
    packed = quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)
    scales = np.repeat(np.asarray(scale, dtype=np.float32), blocks)
    return packed.reshape(n, blocks, size // 4).astype(np.uint8), scales, size


def unpack_2bit(packed: Any, scales: Any, k: int) -> Any:
    """The fp32 weight (N, K) MatMulNBits computes with (zero point 2): for tests and inspect."""
    import numpy as np

    n = packed.shape[0]
    flat = packed.reshape(n, -1)
    values = np.stack([(flat >> shift) & 3 for shift in (0, 2, 4, 6)], axis=-1).reshape(n, -1)[:, :k]
    per_row = scales.reshape(n, -1)[:, :1]
    return ((values.astype(np.float32) - 2.0) * per_row).astype(np.float32)


def _find(graph: Any, weights: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Layer name -> (its MatMul/Gemm node, 'matmul' or 'gemm'), matched by weight values."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    by_bytes: dict[bytes, list[tuple[Any, str]]] = {}
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            array = numpy_helper.to_array(inits[node.input[1]])
            if node.op_type == "Gemm":
                attrs = {a.name: a for a in node.attribute}
                if "transB" not in attrs or attrs["transB"].i != 1:
                    continue
                array = array.T
            by_bytes.setdefault(np.ascontiguousarray(array, dtype=np.float32).tobytes(), []).append(
                (node, node.op_type.lower())
            )
    found = {}
    for name, weight in weights.items():
        key = np.ascontiguousarray(weight.T, dtype=np.float32).tobytes()
        matches = by_bytes.get(key, [])
        if len(matches) != 1:
            raise InputError(
                f"low-bit layer {name}: {len(matches)} ONNX MatMul/Gemm nodes carry its weight "
                "(expected 1): export the model with edgeslim export"
            )
        found[name] = matches[0]
    shared: dict[int, list[str]] = {}
    for name, (node, _) in found.items():
        shared.setdefault(id(node), []).append(name)
    for names in shared.values():
        if len(names) > 1:  # e.g. simplify --share-layers: the exporter keeps one copy of the weight
            raise InputError(
                f"low-bit layers {', '.join(names)} share one weight: export of shared layers is "
                "not supported; make the model low-bit without --share-layers"
            )
    return found


def lower(src: Path, dst: Path, model: Any, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Write `dst`: the fp32 export `src` with the record's layers made low-bit (see the module
    docstring). `model` is the fake-quantized PyTorch model (lowbit.load). Returns, per layer,
    its kind, scheme, shape and the bytes its weight takes in the graph."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from edgeslim import lowbit

    graph_model = onnx.load(str(src))
    graph = graph_model.graph
    modules = dict(model.named_modules())
    weights = {name: modules[name].weight.detach().numpy() for name in record["layers"]}
    found = _find(graph, weights)
    replaced: dict[int, list[Any]] = {}
    dropped: set[str] = set()
    layers: dict[str, dict[str, Any]] = {}
    for name, how in record["layers"].items():
        node, kind = found[name]
        module = modules[name]
        codes, scale = lowbit.codes_of(module.weight, how)
        codes, scale = codes.numpy(), scale.detach().numpy().astype(np.float32)
        dropped.add(node.input[1])
        x, out = node.input[0], node.output[0]
        bias = node.input[2] if kind == "gemm" and len(node.input) > 2 else None
        new: list[Any] = []
        if kind == "gemm":  # 2-D: Unsqueeze -> MatMul -> Add -> Squeeze (see the module docstring)
            graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{name}.axis"))
            new.append(
                helper.make_node("Unsqueeze", [x, f"{name}.axis"], [f"{name}.in3d"], name=f"{name}.unsqueeze")
            )
            x = f"{name}.in3d"
        product = f"{name}.matmul" if kind == "gemm" else out
        if how["scheme"] == "int8":
            if not how.get("activations"):
                raise InputError(f"{name}: int8 layers are exported with their learned input step (QAT)")
            step = float(module.act_step.detach())
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.array(step, np.float32), f"{name}.input_scale"),
                    numpy_helper.from_array(np.array(0, np.int8), f"{name}.input_zero_point"),
                    numpy_helper.from_array(codes.T.astype(np.int8).copy(), f"{name}.qweight"),
                    numpy_helper.from_array(scale, f"{name}.weight_scale"),
                    numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}.weight_zero_point"),
                ]
            )
            io = [f"{name}.input_scale", f"{name}.input_zero_point"]
            new += [
                helper.make_node("QuantizeLinear", [x, *io], [f"{name}.input_q"], name=f"{name}.quantize"),
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}.input_q", *io],
                    [f"{name}.input_dq"],
                    name=f"{name}.dequantize",
                ),
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}.qweight", f"{name}.weight_scale", f"{name}.weight_zero_point"],
                    [f"{name}.weight_dq"],
                    name=f"{name}.weight_dequantize",
                    axis=1,
                ),
                helper.make_node(
                    "MatMul", [f"{name}.input_dq", f"{name}.weight_dq"], [product], name=f"{name}.matmul"
                ),
            ]
            size = codes.size + scale.nbytes + scale.size
        else:
            packed, scales, size_block = pack_2bit(codes, scale)
            graph.initializer.extend(
                [
                    numpy_helper.from_array(packed, f"{name}.qweight"),
                    numpy_helper.from_array(scales, f"{name}.scales"),
                ]
            )
            n, k = codes.shape
            new.append(
                helper.make_node(
                    "MatMulNBits",
                    [x, f"{name}.qweight", f"{name}.scales"],
                    [product],
                    name=f"{name}.matmul_nbits",
                    domain=MS_DOMAIN,
                    K=k,
                    N=n,
                    bits=2,
                    block_size=size_block,
                )
            )
            size = packed.nbytes + scales.nbytes
        if kind == "gemm":
            summed = f"{name}.biased" if bias else product
            if bias:
                new.append(helper.make_node("Add", [product, bias], [summed], name=f"{name}.bias"))
            new.append(helper.make_node("Squeeze", [summed, f"{name}.axis"], [out], name=f"{name}.squeeze"))
        replaced[id(node)] = new
        n_out, n_in = codes.shape
        layers[name] = {
            "kind": how["kind"],
            "scheme": how["scheme"],
            "shape": [n_out, n_in],
            "weight_bytes": int(size),
            "bits_per_weight": round(8 * size / (n_out * n_in), 3),
        }
    nodes = []
    for node in graph.node:
        nodes.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in graph_model.opset_import):
        graph_model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(graph_model, str(dst))
    return layers


def int8_kernels(path: Path, work: Path) -> dict[str, Any]:
    """What onnxruntime's optimized graph (ORT_ENABLE_ALL, CPU) makes of a QDQ model: the node
    types, how many Linear products run on int8 kernels, and any DequantizeLinear that feeds an
    fp32 MatMul/Gemm (a quantized layer left in fp32)."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(work / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(work / "optimized.onnx"), load_external_data=False).graph
    ops = Counter(n.op_type for n in graph.node)
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    fp32 = {"MatMul", "Gemm", "FusedGemm", "FusedMatMul"}
    left = [
        n.name or n.output[0]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and any(c in fp32 for o in n.output for c in consumers.get(o, []))
    ]
    kernels = ("QGemm", "MatMulIntegerToFloat", "QLinearMatMul", "QAttention", "DynamicQuantizeMatMul")
    return {"ops": dict(ops), "int8_products": sum(ops[k] for k in kernels), "dequantized_fp32": left}
