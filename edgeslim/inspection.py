"""What is inside an ONNX artifact: size, parameters, dtypes, ops, quantization, fusion."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeslim import artifacts
from edgeslim.errors import InputError, MissingDependency

# Fused kinds onnxruntime's transformer optimizer produces, and the ops that count as each.
FUSED_OPS: dict[str, tuple[str, ...]] = {
    "attention": ("Attention", "MultiHeadAttention", "PackedAttention", "QAttention"),
    "skip_layer_norm": ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"),
    "embed_layer_norm": ("EmbedLayerNormalization",),
    "gelu": ("BiasGelu", "FastGelu", "Gelu", "BiasFastGelu", "QuickGelu"),
}
QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearMatMul",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
    "QAttention",
    "MatMulNBits",
    "GatherBlockQuantized",
    "QLinearAdd",
    "QLinearMul",
)
# onnx.TensorProto data type -> bytes per element (UINT4/INT4 pack two per byte)
_ITEMSIZE = {
    1: 4.0,
    2: 1.0,
    3: 1.0,
    4: 2.0,
    5: 2.0,
    6: 4.0,
    7: 8.0,
    9: 1.0,
    10: 2.0,
    11: 8.0,
    12: 4.0,
    13: 8.0,
    16: 2.0,
    21: 0.5,
    22: 0.5,
}


def load_graph(path: Path) -> Any:
    """onnx.ModelProto without external data; InputError for a missing or corrupt file."""
    try:
        import onnx
    except ImportError:
        raise MissingDependency("onnx is not installed: pip install 'edgeslim[runtime]'") from None
    if not path.exists():
        raise InputError(f"{path} does not exist: give an artifact directory or a .onnx file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{path} is not a valid ONNX file ({type(exc).__name__}): re-export it") from None


def fusion_report(ops: Counter[str], config: dict[str, Any], off: set[str] | None = None) -> dict[str, Any]:
    """Per fused kind: expected count (from the number of layers) versus found; kinds in
    `off` were switched off on purpose and do not count against full coverage."""
    layers = int(config.get("num_hidden_layers") or config.get("n_layers") or 0)
    act = str(config.get("hidden_act") or config.get("activation") or "")
    expected = {
        "attention": layers,
        "skip_layer_norm": 2 * layers,
        "embed_layer_norm": 1,
        "gelu": layers if "gelu" in act else 0,
    }
    kinds = {}
    for kind, names in FUSED_OPS.items():
        found = sum(ops[n] for n in names)
        want = expected[kind]
        status = "n/a" if want == 0 else "full" if found >= want else "partial" if found else "none"
        status = "off" if kind in (off or set()) else status
        kinds[kind] = {"expected": want, "found": found, "status": status}
    # Layers are "left unfused" when attention or a residual LayerNorm is not fused.
    full = all(kinds[k]["status"] in ("full", "n/a", "off") for k in ("attention", "skip_layer_norm"))
    return {"kinds": kinds, "full": full}


def _weights(graph: Any) -> list[Any]:
    """Initializers plus weight-like Constant nodes (the TorchScript exporter folds some
    biases into Constant nodes); shape and index constants (integers, scalars) are skipped."""
    tensors = list(graph.graph.initializer)
    for node in graph.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type in (1, 10, 16) and len(attr.t.dims) >= 1:
                tensors.append(attr.t)
    return tensors


def _shape(value: Any) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def inspect(target: Path) -> dict[str, Any]:
    """Everything `edgeslim inspect` reports, for an artifact directory or a .onnx file."""
    directory = target if target.is_dir() else target.parent
    model_path = target / artifacts.MODEL if target.is_dir() else target
    manifest = artifacts.read_manifest(directory) if target.is_dir() else None
    graph = load_graph(model_path)
    data_files = _external_files(graph, directory, model_path)
    ops = Counter(n.op_type for n in graph.graph.node)
    params, by_dtype = 0, Counter[str]()
    import onnx

    for tensor in _weights(graph):
        count = 1
        for d in tensor.dims:
            count *= d
        params += count
        name = onnx.TensorProto.DataType.Name(tensor.data_type)
        by_dtype[name] += int(count * _ITEMSIZE.get(tensor.data_type, 4.0))
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    result: dict[str, Any] = {
        "path": str(model_path),
        "size_bytes": sum(p.stat().st_size for p in [model_path, *data_files]),
        "external_data": bool(data_files),
        "parameters": params,
        "initializer_bytes": dict(by_dtype.most_common()),
        "opset": opsets,
        "producer": f"{graph.producer_name} {graph.producer_version}".strip(),
        "inputs": [
            {
                "name": i.name,
                "shape": _shape(i),
                "dtype": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type),
            }
            for i in graph.graph.input
        ],
        "outputs": [
            {
                "name": o.name,
                "shape": _shape(o),
                "dtype": onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type),
            }
            for o in graph.graph.output
        ],
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "quantized_ops": {k: ops[k] for k in QUANT_OPS if ops[k]},
    }
    kinds = _lowbit_kinds(manifest)
    result["weight_bits"] = weight_bits(graph, kinds)
    config_path = directory / "config.json"
    if config_path.exists():
        from edgeslim.models import read_json

        result["fusion"] = fusion_report(ops, read_json(config_path))
    if manifest is not None:
        result["manifest"] = summarize_manifest(manifest)
    return result


def _lowbit_kinds(manifest: dict[str, Any] | None) -> dict[str, str]:
    """Layer name -> kind (ffn, attention, head) of a low-bit export's layers, from its manifest."""
    for step in (manifest or {}).get("steps", []):
        if step.get("type") == "export" and step.get("lowbit"):
            return {name: layer["kind"] for name, layer in step["lowbit"]["layers"].items()}
    return {}


# Nodes whose second input is a weight matrix (fused attention: the packed Q/K/V weights).
PRODUCTS = ("MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "Attention", "QAttention")


def weight_bits(graph: Any, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Bits per weight of the matrix products' weights, by layer kind: what the file stores for
    them (codes plus scales and zero points) over their element count. Low-bit layers
    (MatMulNBits, or an int8 initializer behind DequantizeLinear) are grouped by the kind the
    manifest names; every other MatMul/Gemm/Attention weight initializer counts as `other`
    (scales and zero points are counted for the low-bit layers and DynamicQuantizeMatMul)."""
    import numpy as np

    inits = {i.name: i for i in graph.graph.initializer}

    def nbytes(*names: str) -> int:  # from dims and dtype: external data need not be loaded
        return sum(_tensor_bytes(inits[n]) or 0 for n in names if n in inits)

    producers = {o: node for node in graph.graph.node for o in node.output}
    groups: dict[str, list[int]] = {}  # kind -> [bytes, weights]

    def add(weight_name: str, stored: int, count: int) -> None:
        kind = kinds.get(weight_name.removesuffix(".qweight"), "other")
        group = groups.setdefault(kind, [0, 0])
        group[0] += stored
        group[1] += count

    for node in graph.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            add(node.input[1], nbytes(*node.input[1:4]), attrs["N"] * attrs["K"])
        elif node.op_type in PRODUCTS and len(node.input) > 1:
            weight = node.input[1]
            source = producers.get(weight)
            if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in inits:
                count = int(np.prod(inits[source.input[0]].dims))
                add(source.input[0], nbytes(*source.input[:3]), count)
            elif weight in inits and len(inits[weight].dims) == 2:
                extra = node.input[2:4] if node.op_type == "DynamicQuantizeMatMul" else ()
                add(weight, nbytes(weight, *extra), int(np.prod(inits[weight].dims)))
    return {
        kind: {"weights": count, "bytes": stored, "bits_per_weight": round(8 * stored / max(count, 1), 3)}
        for kind, (stored, count) in sorted(groups.items())
    }


def _external_files(graph: Any, directory: Path, model_path: Path) -> list[Path]:
    """The external-data files the graph references; InputError when one is missing, too
    short or outside the directory (a size without the weights would be a wrong answer)."""
    problems = external_data_problems(graph, directory)
    if problems:
        raise InputError(
            f"{model_path}: " + "; ".join(problems) + ": restore the file or re-export the artifact"
        )
    return [directory / location for location in external_refs(graph)]


def tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a GraphProto: initializers, sparse ones, Constant/attribute tensors,
    recursively through subgraphs (If/Loop/Scan bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from tensors(attr.g)
            for sub in attr.graphs:
                yield from tensors(sub)


def _tensor_bytes(tensor: Any) -> int | None:
    """Bytes a tensor's data occupies, from dims and dtype (None when not fixed-size)."""
    if tensor.data_type not in _ITEMSIZE:
        return None
    count = 1
    for dim in tensor.dims:
        count *= dim
    return int(-(-count * _ITEMSIZE[tensor.data_type] // 1))


def external_refs(model: Any) -> dict[str, list[tuple[str, int, int | None]]]:
    """location -> [(tensor name, offset, length or None)] for tensors stored outside the graph."""
    refs: dict[str, list[tuple[str, int, int | None]]] = {}
    for tensor in tensors(model.graph):
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        length = int(info["length"]) if info.get("length", "").isdigit() else _tensor_bytes(tensor)
        offset = int(info["offset"]) if info.get("offset", "").isdigit() else 0
        refs.setdefault(info.get("location", ""), []).append((tensor.name, offset, length))
    return refs


def external_data_problems(model: Any, root: Path) -> list[str]:
    """Locations that leave `root`, are missing, or are shorter than a tensor's offset + length."""
    problems = []
    for location, refs in external_refs(model).items():
        where = f"external data '{location}' ({len(refs)} tensor(s), e.g. '{refs[0][0]}')"
        path = root / location
        if not location or Path(location).is_absolute() or not artifacts.inside(path, root):
            problems.append(f"{where}: location is outside the artifact directory")
        elif not path.is_file():
            problems.append(f"{where}: file is missing")
        else:
            size = path.stat().st_size
            short = [(name, off + n) for name, off, n in refs if n is not None and off + n > size]
            if short:
                name, end = max(short, key=lambda x: x[1])
                problems.append(
                    f"{where}: file has {size} bytes but '{name}' needs {end} "
                    f"({len(short)} tensor(s) cut off)"
                )
    return problems


def summarize_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's headline: task, source, and per step its type and key figures."""
    steps = []
    for step in manifest.get("steps", []):
        entry = {"type": step.get("type")}
        if "parity" in step:
            entry["parity_max_abs_diff"] = step["parity"].get("max_abs_diff")
        if "fusion" in step:
            entry["fusion_full"] = step["fusion"].get("full")
        if "fidelity" in step:
            entry["mode"] = step["config"].get("mode")
            entry["fidelity"] = step["fidelity"]
        steps.append(entry)
    return {
        "task": manifest.get("task"),
        "model_type": manifest.get("model_type"),
        "source": manifest.get("source"),
        "steps": steps,
        "metrics": manifest.get("metrics"),
    }
