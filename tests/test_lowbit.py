"""Low-bit training and deployment on tiny seeded models: the straight-through rules, learned
ranges, QDQ int8 that onnxruntime runs on int8 kernels, ternary/binary weights packed into
2-bit MatMulNBits exactly, and the sizes reported."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import cli
from onnx import helper, numpy_helper

from edgeslim import artifacts, lowbit, lowbit_onnx
from edgeslim.errors import InputError

TRAIN = ["--max-steps", "4", "--eval-every", "2", "--save-every", "2", "--batch-size", "8"]
LINEARS = 14  # 2 layers x (query, key, value, attention output, intermediate, output) + pooler + classifier


def _teacher(balanced_cls: dict[str, Path]) -> Path:
    return balanced_cls["artifact"].parent / "artifact-hf"


def _data(balanced_cls: dict[str, Path]) -> list[str]:
    own = str(balanced_cls["own"])
    return ["--data", own, "--eval", own]


def test_activation_ste_passes_gradient_only_inside_the_clip_range() -> None:
    x = torch.tensor([-20.0, -0.34, 0.1, 5.0, 30.0], requires_grad=True)
    step = torch.tensor(0.1, requires_grad=True)  # representable: |x| <= 12.7
    y = lowbit.quantize_activation(x, step)
    assert torch.equal(y.detach(), torch.tensor([-12.7, -0.3, 0.1, 5.0, 12.7]))
    y.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    v = np.array([-200.0, -3.4, 1.0, 50.0, 300.0])
    terms = np.where(np.abs(v) <= 127, np.round(v) - v, np.clip(v, -127, 127))
    expected = terms.sum() / math.sqrt(5 * 127)  # LSQ: the step's gradient, scaled
    assert step.grad is not None and float(step.grad) == pytest.approx(expected, rel=1e-5)


def test_learned_input_ranges_receive_gradients_and_move() -> None:
    torch.manual_seed(0)
    layer, reference = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    lowbit.convert(layer, "int8", activations=True)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(64, 16) * 3
    layer.train()
    layer(x)  # the first training forward sets LSQ's initial step
    first = float(layer.act_step.detach())
    assert first == pytest.approx(2 * float(x.abs().mean()) / math.sqrt(127), rel=1e-5)
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), reference(x).detach())
        loss.backward()
        assert layer.act_step.grad is not None and float(layer.act_step.grad) != 0.0
        optimizer.step()
    assert float(layer.act_step.detach()) != pytest.approx(first, rel=1e-4)


def test_calibrated_input_ranges_are_set_once_and_stay() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    lowbit.convert(layer, "int8", activations=True, learned=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(64, 16) * 3
    layer.train()
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).pow(2).mean().backward()
        optimizer.step()
    assert float(layer.act_step.detach()) == pytest.approx(float(x.abs().max()) / 127, rel=1e-6)
    assert layer.act_step.grad is None


def test_ternary_and_binary_weights_take_three_and_two_values_per_channel() -> None:
    torch.manual_seed(0)
    weight = torch.randn(12, 64) * 0.5
    weight[0, :3] = torch.tensor([1.5, -2.0, 0.9])
    for scheme, count in (("ternary", 3), ("binary", 2)):
        latent = weight.clone().requires_grad_(True)
        value = lowbit.quantized_weight(latent, scheme)
        for row in value.detach():
            values = set(row.tolist())
            assert len(values) == count, (scheme, values)
            alpha = max(values)
            assert values == ({-alpha, 0.0, alpha} if count == 3 else {-alpha, alpha}) and alpha > 0
        value.sum().backward()
        assert latent.grad is not None  # straight through, clipped to |w| <= 1
        assert latent.grad[0, :3].tolist() == [0.0, 0.0, 1.0] and torch.all(
            latent.grad[weight.abs() <= 1] == 1
        )
    codes, scale = lowbit.weight_ternary(weight)
    kept = codes[1] != 0
    assert float(scale[1]) == pytest.approx(float(weight[1].abs()[kept].mean()))  # mean |w| of the kept
    assert torch.all(weight[1].abs()[kept] > 0.7 * weight[1].abs().mean())


def test_qat_exports_qdq_that_onnxruntime_runs_on_int8_kernels(
    balanced_cls: dict[str, Path], tmp_path: Path
) -> None:
    trained, onnx_dir = tmp_path / "qat", tmp_path / "qat-onnx"
    # 7-bit weight codes, as on a CPU without VNNI: given, not read from this host
    qat = ["qat", str(_teacher(balanced_cls)), "--reduce-range", *_data(balanced_cls), *TRAIN]
    result = cli([*qat, "-o", str(trained)])
    assert result.exit_code == 0, result.output
    record = lowbit.read_record(trained)
    assert record is not None and len(record["layers"]) == LINEARS
    assert {how["weight_max"] for how in record["layers"].values()} == {63}
    assert record["method"]["fidelity"]["metric"] == "accuracy"
    steps = lowbit.saved_steps(trained)
    assert len(steps) == LINEARS and all(s > 0 for s in steps.values())
    result = cli(["export", str(trained), "--task", "sequence-classification", "-o", str(onnx_dir)])
    assert result.exit_code == 0, result.output
    kernels = lowbit_onnx.int8_kernels(onnx_dir / "model.onnx", tmp_path)
    assert kernels["int8_products"] == LINEARS and kernels["dequantized_fp32"] == []
    assert kernels["ops"]["MatMulIntegerToFloat"] == LINEARS
    # the ORT artifact agrees with the fake-quantized PyTorch model on >= 99.5% of labels
    fake = lowbit.load(trained, "sequence-classification")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 95, size=(400, 12))  # the tiny vocabulary has 95 entries
    mask = np.ones_like(ids)
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    got = session.run(None, feeds)[0].argmax(-1)
    with torch.no_grad():
        want = fake(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.argmax(-1).numpy()
    assert (got == want).mean() >= 0.995
    export = artifacts.read_manifest(onnx_dir)["steps"][0]
    assert export["lowbit"]["method"]["type"] == "qat" and len(export["lowbit"]["layers"]) == LINEARS
    graph = onnx.load(str(onnx_dir / "model.onnx"))
    codes = [numpy_helper.to_array(i) for i in graph.graph.initializer if i.name.endswith(".qweight")]
    assert len(codes) == LINEARS and max(int(np.abs(c.astype(np.int32)).max()) for c in codes) == 63


def test_the_int8_kernel_check_catches_dequantize_feeding_an_fp32_gemm(tmp_path: Path) -> None:
    """What onnxruntime does with a QDQ Gemm that has an fp32 bias (a Linear's export): it stays
    fp32 (without the bias it becomes QGemm)."""
    weight = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full(4, 0.1, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(np.ones(4, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Gemm", ["xd", "wd", "b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "g.onnx"))
    found = lowbit_onnx.int8_kernels(tmp_path / "g.onnx", tmp_path)
    assert found["int8_products"] == 0 and len(found["dequantized_fp32"]) == 2


@pytest.mark.parametrize(("weights", "direct"), [("ternary", True), ("binary", False)])
def test_ternary_and_binary_pack_into_2bit_matmulnbits_exactly(
    weights: str, direct: bool, balanced_cls: dict[str, Path], tmp_path: Path
) -> None:
    low, onnx_dir = tmp_path / weights, tmp_path / f"{weights}-onnx"
    how = ["--direct"] if direct else TRAIN
    args = ["binarize", str(_teacher(balanced_cls)), "--weights", weights, "--layers", "all", *how]
    result = cli([*args, "-o", str(low), *_data(balanced_cls)])
    assert result.exit_code == 0, result.output
    result = cli(["export", str(low), "--task", "sequence-classification", "-o", str(onnx_dir)])
    assert result.exit_code == 0, result.output
    fake = lowbit.load(low, "sequence-classification")
    modules = dict(fake.named_modules())
    graph = onnx.load(str(onnx_dir / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    packed = [n for n in graph.graph.node if n.op_type == "MatMulNBits"]
    assert len(packed) == 12  # every encoder Linear; pooler and classifier stay fp32
    for node in packed:
        name = node.input[1].removesuffix(".qweight")
        with torch.no_grad():
            want = lowbit.quantized_weight(modules[name].weight, weights).numpy()
        k = want.shape[1]
        assert np.array_equal(lowbit_onnx.unpack_2bit(inits[node.input[1]], inits[node.input[2]], k), want)
        assert len(np.unique(want[0])) == (3 if weights == "ternary" else 2)
    # onnxruntime itself computes with exactly those weights (zero point 2 by default)
    node = packed[0]
    k, n = (next(a.i for a in node.attribute if a.name == key) for key in ("K", "N"))
    single = helper.make_graph(
        [helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], domain="com.microsoft", **_attrs(node))],
        "one",
        [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, k, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, k, n])],
        [
            numpy_helper.from_array(inits[node.input[1]], "b"),
            numpy_helper.from_array(inits[node.input[2]], "s"),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(single, opset_imports=opsets), str(tmp_path / "one.onnx"))
    session = ort.InferenceSession(str(tmp_path / "one.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"a": np.eye(k, dtype=np.float32)[None]})[0][0]
    with torch.no_grad():
        want = lowbit.quantized_weight(
            modules[node.input[1].removesuffix(".qweight")].weight, weights
        ).numpy()
    assert np.array_equal(got, want.T)
    _sizes_are_as_reported(onnx_dir, graph)
    # what binarize left fp32 can then go dynamic int8; the 2-bit layers stay as they are
    mixed = cli(["quantize", str(onnx_dir), "--mode", "dynamic", "-o", str(tmp_path / "mixed")])
    assert mixed.exit_code == 0, mixed.output
    ops = json.loads(cli(["inspect", str(tmp_path / "mixed"), "--json"]).output)["quantized_ops"]
    assert ops["MatMulNBits"] == 12 and ops["MatMulInteger"] >= 1
    static = cli(["quantize", str(onnx_dir), "--mode", "static", "-o", str(tmp_path / "static")])
    assert static.exit_code == 3 and "already quantized" in static.output


def _attrs(node: onnx.NodeProto) -> dict[str, int]:
    return {a.name: a.i for a in node.attribute}


def _sizes_are_as_reported(onnx_dir: Path, graph: onnx.ModelProto) -> None:
    """The manifest's per-layer bytes are the initializers' bytes; inspect's bits per weight
    agree; the artifact size is the files' size."""
    layers = artifacts.read_manifest(onnx_dir)["steps"][0]["lowbit"]["layers"]
    sizes = {i.name: numpy_helper.to_array(i).nbytes for i in graph.graph.initializer}
    for name, layer in layers.items():
        assert layer["weight_bytes"] == sizes[f"{name}.qweight"] + sizes[f"{name}.scales"]
        n, k = layer["shape"]
        assert layer["bits_per_weight"] == round(8 * layer["weight_bytes"] / (n * k), 3)
    report = cli(["inspect", str(onnx_dir), "--json"])
    found = json.loads(report.output)
    for kind in ("ffn", "attention"):
        mine = [v for v in layers.values() if v["kind"] == kind]
        assert found["weight_bits"][kind]["bytes"] == sum(v["weight_bytes"] for v in mine)
        assert found["weight_bits"][kind]["weights"] == sum(v["shape"][0] * v["shape"][1] for v in mine)
    assert found["size_bytes"] == (onnx_dir / "model.onnx").stat().st_size


def test_layer_selection_by_kind(tiny_factory: Callable[..., Path]) -> None:
    from edgeslim import models

    model = models.load(tiny_factory("bert", "seq", 2), "sequence-classification")
    kinds = lowbit.linear_kinds(model)
    ffn = {n for n in lowbit.select(kinds, "ffn")}
    attention = {n for n in lowbit.select(kinds, "attention")}
    assert ffn == {
        f"bert.encoder.layer.{i}.{p}" for i in (0, 1) for p in ("intermediate.dense", "output.dense")
    }
    names = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
    assert attention == {f"bert.encoder.layer.{i}.{p}" for i in (0, 1) for p in names}
    assert set(lowbit.select(kinds, "all")) == ffn | attention
    assert set(lowbit.select(kinds, "every")) == ffn | attention | {"bert.pooler.dense", "classifier"}


def test_layers_sharing_one_weight_are_refused_at_export() -> None:
    """simplify --share-layers leaves one weight for two layers: packing one and not the other
    would misreport the file, so the export refuses."""
    weight = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    init = numpy_helper.from_array(weight.T.copy(), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [], [], [init])
    with pytest.raises(InputError, match="share one weight"):
        lowbit_onnx._find(graph, {"a.dense": weight, "b.dense": weight})


def test_bad_low_bit_input_is_one_line(
    balanced_cls: dict[str, Path], tiny_bert: Path, tmp_path: Path
) -> None:
    result = cli(["qat", str(tiny_bert), "-o", str(tmp_path / "q"), "--max-steps", "1"])
    assert result.exit_code == 3 and "supports sequence classifiers" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "q").exists()  # one line, nothing written
    low = tmp_path / "ter"
    args = ["binarize", str(_teacher(balanced_cls)), "--direct", *_data(balanced_cls)]
    assert cli([*args, "-o", str(low)]).exit_code == 0
    again = cli(["binarize", str(low), "--direct", *_data(balanced_cls), "-o", str(tmp_path / "twice")])
    assert again.exit_code == 3 and "already low-bit" in again.output
    untasked = cli(["export", str(low), "-o", str(tmp_path / "e")])  # the default task is feature-extraction
    assert untasked.exit_code == 3 and "--task sequence-classification" in untasked.output
    pruned = cli(["prune", str(low), "--ffn", "0.5", "-o", str(tmp_path / "p")])
    assert pruned.exit_code == 3 and "is low-bit" in pruned.output and not (tmp_path / "p").exists()
    teacher = ["--teacher", str(_teacher(balanced_cls))]
    direct = cli(["binarize", str(_teacher(balanced_cls)), "--direct", *teacher, "-o", str(tmp_path / "d")])
    assert direct.exit_code == 3 and "drop --teacher" in direct.output
    bad_eval = cli(
        ["binarize", str(_teacher(balanced_cls)), "--direct", "--eval", "nope.tsv", "-o", str(tmp_path / "b")]
    )
    assert bad_eval.exit_code == 3 and not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))
    bad = cli(["binarize", str(_teacher(balanced_cls)), "--layers", "head", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 3 and "ffn" in bad.output  # not one of ffn, attention, all
    assert lowbit_onnx.block_size(384) == 128 and lowbit_onnx.block_size(48) == 16
    assert lowbit_onnx.block_size(37) == 16  # padded: the tiny model's FFN (37) packs exactly above
    with pytest.raises(InputError, match="must be -1, 0 or 1"):
        lowbit_onnx.pack_2bit(np.full((2, 16), 2), np.ones(2))
