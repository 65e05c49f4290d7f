"""Low-bit Linear layers in PyTorch: quantization-aware training (int8 weights per output
channel, int8 activations per tensor with a learned LSQ step) and ternary/binary weights, direct
or trained with straight-through gradients.

A converted layer stays an nn.Linear (its class is swapped for LowBitLinear), so parameter
names, save_pretrained and the checkpoints are unchanged; a learned activation step is one
more parameter, `<layer>.act_step`, saved with the weights. Which layers were converted, and
how, is written beside the model as edgeslim-lowbit.json (`save_record`); `load` rebuilds the
fake-quantized model from a directory, and lowbit_onnx.py turns it into ONNX that onnxruntime
runs on int8 kernels (QDQ) or as 2-bit MatMulNBits.

Hand-written: torch.ao's QAT prepares modules for its own int8 backends and has no ternary or
binary weights; the straight-through rules here are the few lines the methods define.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from edgeslim.errors import InputError

Scheme = Literal["int8", "ternary", "binary"]
Layers = Literal["ffn", "attention", "all"]
RECORD = "edgeslim-lowbit.json"
INT8_MAX = 127  # symmetric int8: codes -127..127, zero point 0 (weights and activations)
TERNARY_THRESHOLD = 0.7  # ternary: |w| > 0.7 x mean|w| of its output channel is non-zero (TWN)
LATENT_CLIP = 1.0  # ternary/binary: the straight-through gradient flows where |w| <= 1


def _torch() -> Any:
    import torch

    return torch


def weight_int8(weight: Any, qmax: int = INT8_MAX) -> tuple[Any, Any]:
    """Per-output-channel symmetric int8: (codes as float, scale per row), scale = max|w| / qmax
    (127; 63 for 7-bit weights, see REDUCED_MAX)."""
    torch = _torch()
    scale = weight.detach().abs().amax(dim=1).clamp(min=1e-12) / qmax
    codes = torch.clamp(torch.round(weight.detach() / scale[:, None]), -qmax, qmax)
    return codes, scale


def weight_ternary(weight: Any) -> tuple[Any, Any]:
    """Ternary codes in {-1, 0, 1} and a scale per output channel (row): |w| above 0.7 x the
    row's mean |w| keeps its sign, the rest is 0; the scale is the mean |w| of the kept ones."""
    torch = _torch()
    magnitude = weight.detach().abs()
    threshold = TERNARY_THRESHOLD * magnitude.mean(dim=1, keepdim=True)
    keep = (magnitude > threshold).to(weight.dtype)
    scale = (magnitude * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
    return torch.sign(weight.detach()) * keep, scale


def weight_binary(weight: Any) -> tuple[Any, Any]:
    """Binary codes in {-1, 1} (sign; 0 counts as +1) and a scale per row: the row's mean |w|."""
    torch = _torch()
    codes = torch.where(weight.detach() >= 0, 1.0, -1.0).to(weight.dtype)
    return codes, weight.detach().abs().mean(dim=1)


QUANTIZERS = {"int8": weight_int8, "ternary": weight_ternary, "binary": weight_binary}
# 7-bit int8 weights (codes -63..63): on x86 without VNNI, onnxruntime's u8 x s8 kernels add
# pairs of products in 16 bits, which 255 x 127 x 2 overflows (hardware.int8_defaults' reduce_range).
REDUCED_MAX = 63


def codes_of(weight: Any, how: dict[str, Any]) -> tuple[Any, Any]:
    """(codes, scale per row) of a planned layer's weight."""
    if how["scheme"] == "int8":
        return weight_int8(weight, int(how.get("weight_max", INT8_MAX)))
    return QUANTIZERS[how["scheme"]](weight)


def quantized_weight(weight: Any, scheme: str, weight_max: int = INT8_MAX) -> Any:
    """The weight the forward pass uses (codes x scale), with a straight-through gradient: the
    identity for int8 (every weight lies inside its range), clipped to |w| <= 1 for ternary and
    binary (the latent weight of BinaryBERT/TernaryBERT)."""
    codes, scale = codes_of(weight, {"scheme": scheme, "weight_max": weight_max})
    value = codes * scale[:, None]
    if scheme == "int8":
        return weight + (value - weight).detach()
    passes = (weight.detach().abs() <= LATENT_CLIP).to(weight.dtype)
    return value + (weight - weight.detach()) * passes


class _LsqQuantize:  # a namespace for the autograd Function, built when torch is imported
    function: Any = None


def _lsq() -> Any:
    """An autograd Function: x -> clamp(round(x / s), -127, 127) x s; the gradient reaches x only
    inside the clip range (outside it is 0) and reaches the step s as in LSQ (Esser et al. 2020):
    round(v) - v inside, -127 / 127 below / above, scaled by 1/sqrt(numel x 127)."""
    if _LsqQuantize.function is None:
        torch = _torch()

        class Quantize(torch.autograd.Function):  # type: ignore[misc, name-defined]
            @staticmethod
            def forward(ctx: Any, x: Any, step: Any) -> Any:
                v = x / step
                ctx.save_for_backward(v, step)
                return torch.clamp(torch.round(v), -INT8_MAX, INT8_MAX) * step

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                v, step = ctx.saved_tensors
                inside = (v >= -INT8_MAX) & (v <= INT8_MAX)
                term = torch.where(inside, torch.round(v) - v, torch.clamp(v, -INT8_MAX, INT8_MAX))
                scale = 1.0 / math.sqrt(v.numel() * INT8_MAX)
                return grad * inside.to(grad.dtype), (grad * term).sum().reshape(step.shape) * scale

        _LsqQuantize.function = Quantize
    return _LsqQuantize.function


def quantize_activation(x: Any, step: Any) -> Any:
    """Per-tensor symmetric int8 fake quantization with the learned step `step`."""
    return _lsq().apply(x, step)


def _linear_class() -> Any:
    torch = _torch()

    class LowBitLinear(torch.nn.Linear):  # type: ignore[misc, name-defined]
        """An nn.Linear whose forward uses quantized weights and, with `act_step`, quantized
        inputs (set by `convert`; the first training forward initialises the step)."""

        scheme: str
        act_step: Any

        def forward(self, x: Any) -> Any:
            if getattr(self, "act_step", None) is not None:
                if self.training and not bool(self.act_ready):
                    with torch.no_grad():  # from the first training batch
                        if self.act_step.requires_grad:  # learned: LSQ's initial step 2 mean|x| / sqrt(127)
                            first = 2 * x.abs().mean() / math.sqrt(INT8_MAX)
                        else:  # calibrated: the batch's range, max|x| / 127, then fixed
                            first = x.abs().max() / INT8_MAX
                        self.act_step.fill_(float(first) or 1e-3)
                        self.act_ready.fill_(1)
                x = quantize_activation(x, self.act_step)
            weight = quantized_weight(self.weight, self.scheme, getattr(self, "weight_max", INT8_MAX))
            return torch.nn.functional.linear(x, weight, self.bias)

    return LowBitLinear


_CLASS: dict[str, Any] = {}


def low_bit_class() -> Any:
    if "class" not in _CLASS:
        _CLASS["class"] = _linear_class()
    return _CLASS["class"]


def convert(
    linear: Any, scheme: str, activations: bool, learned: bool = True, weight_max: int = INT8_MAX
) -> None:
    """Make `linear` a LowBitLinear in place (same parameters; with `activations`, an input
    step that training learns, or, not `learned`, one calibrated on the first batch and fixed)."""
    torch = _torch()
    linear.__class__ = low_bit_class()
    linear.scheme = scheme
    linear.weight_max = weight_max
    if activations and getattr(linear, "act_step", None) is None:
        step = torch.ones((), dtype=linear.weight.dtype)
        linear.act_step = torch.nn.Parameter(step, requires_grad=learned)
        linear.register_buffer("act_ready", torch.zeros((), dtype=torch.uint8))


def linear_kinds(model: Any) -> dict[str, str]:
    """Every nn.Linear of `model` by name: `ffn` (one side is the FFN width), `attention` (the
    rest of a transformer block) or `head` (pooler, classifier)."""
    torch = _torch()
    from edgeslim.train.students import _layers

    blocks = _layers(model)
    inside = {id(m) for m in blocks.modules()}
    ffn = int(getattr(model.config, "intermediate_size", 0) or getattr(model.config, "hidden_dim", 0))
    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if id(module) not in inside:
                kinds[name] = "head"
            else:
                kinds[name] = "ffn" if ffn in (module.in_features, module.out_features) else "attention"
    return kinds


def select(kinds: dict[str, str], layers: str) -> list[str]:
    """The Linear names `layers` (ffn, attention, all: both, head for QAT's every-Linear) names."""
    wanted = {
        "ffn": {"ffn"},
        "attention": {"attention"},
        "all": {"ffn", "attention"},
        "every": set(kinds.values()),
    }
    if layers not in wanted:
        raise InputError(f"unknown layer selection '{layers}': choose ffn, attention or all")
    return [name for name, kind in kinds.items() if kind in wanted[layers]]


def apply(model: Any, plan: dict[str, dict[str, Any]]) -> None:
    """Convert the layers of `plan` (name -> {"scheme", "activations"}) in place."""
    modules = dict(model.named_modules())
    for name, how in plan.items():
        if name not in modules:
            raise InputError(f"low-bit layer {name} is not in the model: the record does not match it")
        learned = how.get("ranges", "learned") == "learned"
        weight_max = int(how.get("weight_max", INT8_MAX))
        convert(modules[name], how["scheme"], bool(how.get("activations")), learned, weight_max)


def plan_for(
    model: Any,
    scheme: str,
    layers: str,
    activations: bool,
    ranges: str = "learned",
    weight_max: int = INT8_MAX,
) -> dict[str, dict[str, Any]]:
    """Layer name -> how to convert it: weight scheme (and int8's code range), quantized inputs
    (and their ranges), kind."""
    kinds = linear_kinds(model)
    extra: dict[str, Any] = {"ranges": ranges} if activations else {}
    if scheme == "int8":
        extra["weight_max"] = weight_max
    return {
        name: {"scheme": scheme, "activations": activations, "kind": kinds[name], **extra}
        for name in select(kinds, layers)
    }


def bake(model: Any, plan: dict[str, dict[str, Any]]) -> None:
    """Direct low-bit weights: each planned layer's weight becomes its quantized value (no
    training); the layers stay plain nn.Linear."""
    torch = _torch()
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, how in plan.items():
            weight = modules[name].weight
            codes, scale = codes_of(weight, how)
            weight.copy_(codes * scale[:, None])


def save_record(out: Path, plan: dict[str, dict[str, Any]], method: dict[str, Any]) -> None:
    """edgeslim-lowbit.json: the converted layers and how they were made."""
    from edgeslim import artifacts

    artifacts.write_json(out / RECORD, {"method": method, "layers": plan})


def read_record(path: Path) -> dict[str, Any] | None:
    """The model directory's low-bit record, or None for an ordinary model."""
    file = path / RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{file} cannot be read ({exc}): re-run the qat/binarize step") from None
    if not isinstance(record, dict) or not isinstance(record.get("layers"), dict):
        raise InputError(f"{file} is not a low-bit record: re-run the qat/binarize step")
    return record


def refuse(path: Path, step: str) -> None:
    """A step that would drop the low-bit layers (prune, simplify) refuses a low-bit model."""
    if read_record(path) is not None:
        raise InputError(f"{path} is low-bit: {step} its fp32 model first, then run qat or binarize")


def load(path: Path, task: str) -> Any:
    """The fake-quantized PyTorch model of directory `path` (eval mode): the transformers model,
    its low-bit layers converted and their activation steps read from the saved weights."""
    from edgeslim import models

    model = models.load(path, task)
    record = read_record(path)
    return attach(model, path, record) if record is not None else model


def attach(model: Any, path: Path, record: dict[str, Any]) -> Any:
    """Make `model` (loaded from `path`) the fake-quantized model its `record` describes, in place."""
    torch = _torch()
    apply(model, record["layers"])
    steps = saved_steps(path)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, how in record["layers"].items():
            if how.get("activations"):
                if name not in steps:
                    raise InputError(f"{path}: no saved activation step for {name}: re-run the qat step")
                modules[name].act_step.fill_(steps[name])
                modules[name].act_ready.fill_(1)
    return model.eval()


def saved_steps(path: Path) -> dict[str, float]:
    """Layer name -> its learned activation step, from the model's safetensors files."""
    from safetensors import safe_open

    from edgeslim import models

    steps = {}
    for file in models.weight_files(path, False):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118  (safe_open has no __iter__)
                if key.endswith(".act_step"):
                    steps[key.removesuffix(".act_step")] = float(handle.get_tensor(key))
    return steps


class Hook:
    """The training loop's hook for QAT and trained ternary/binary weights: it converts the
    planned layers when made (before the optimizer sees the parameters) and then only reports;
    the straight-through rules live in the layers' forward."""

    kind = "lowbit"

    def __init__(self, model: Any, plan: dict[str, dict[str, Any]]) -> None:
        apply(model, plan)
        self.plan = plan

    def describe(self) -> dict[str, Any]:
        return {"lowbit": self.plan}

    def after_backward(self) -> None:
        return None

    def after_step(self, step: int, total: int) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        return False

    def report(self) -> dict[str, Any]:
        schemes = sorted({how["scheme"] for how in self.plan.values()})
        return {"layers": len(self.plan), "schemes": schemes}
