"""A transformers model -> an ONNX artifact with dynamic batch/sequence axes, proven against
PyTorch at shapes tracing never saw (the export step's Config and run)."""

from __future__ import annotations

import inspect as pyinspect
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from edgeslim import artifacts, lowbit, models
from edgeslim.config import StepConfig
from edgeslim.defaults import EXTERNAL_DATA_MB, PARITY_ATOL, PARITY_RTOL
from edgeslim.errors import InputError


class ExportConfig(StepConfig):
    """How to export: task head, pooling, opset, exporter, external data, parity tolerance."""

    takes_model: ClassVar[bool] = True
    type: Literal["export"] = "export"
    task: models.Task = Field("feature-extraction", description="Model head to export.")
    pooling: models.Pooling | None = Field(
        None, description="feature-extraction pooling; default: the checkpoint's, else mean."
    )
    opset: int = Field(17, ge=14, le=21, description="ONNX opset (17: TorchScript exporter).")
    exporter: Literal["torchscript", "dynamo"] = Field(
        "torchscript", description="torchscript fuses fully in onnxruntime; dynamo does not yet."
    )
    external_data: bool = Field(False, description="Store weights in model.onnx_data.")
    external_data_threshold_mb: float = Field(
        EXTERNAL_DATA_MB, gt=0, description="Switch to external data when the model is larger than this."
    )
    atol: float = Field(PARITY_ATOL, gt=0, description="Parity: absolute tolerance.")
    rtol: float = Field(PARITY_RTOL, ge=0, description="Parity: relative tolerance.")
    allow_pickle: bool = Field(False, description="Allow pickle (.bin) checkpoints.")


def _io_names(model: Any, task: str) -> tuple[list[str], list[str]]:
    """Graph inputs the model uses and the outputs edgeslim exports for `task`."""
    inputs = ["input_ids", "attention_mask"]
    accepts = pyinspect.signature(model.forward).parameters
    if getattr(model.config, "type_vocab_size", 0) > 1 and "token_type_ids" in accepts:
        inputs.append("token_type_ids")
    outputs = ["last_hidden_state", "sentence_embedding"] if task == "feature-extraction" else ["logits"]
    return inputs, outputs


def _wrapper(model: Any, task: str, pooling: str, input_names: list[str]) -> Any:
    """A module taking positional tensors that calls the model by keyword (transformers-5 safe)."""
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> Any:
            feeds = dict(zip(input_names, tensors, strict=True))
            out = self.model(**feeds)
            if task != "feature-extraction":
                return out.logits
            hidden = out.last_hidden_state  # (B, T, H)
            return hidden, models.pool(hidden, feeds["attention_mask"], pooling)

    return Exportable().eval()


def _export(wrapper: Any, inputs: list[str], outputs: list[str], cfg: ExportConfig, path: Path) -> None:
    """torch.onnx.export with dynamic batch and sequence axes."""
    import torch

    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update({name: {0: "batch", 1: "sequence"} for name in outputs})
    if "sentence_embedding" in outputs:
        axes["sentence_embedding"] = {0: "batch"}
    shapes: dict[str, Any] = {"dynamic_axes": axes}
    if cfg.exporter == "dynamo":  # it cannot map dynamic_axes for a *args forward
        dim = torch.export.Dim.DYNAMIC
        shapes = {"dynamic_shapes": (tuple({0: dim, 1: dim} for _ in inputs),)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            sample,
            str(path),
            input_names=inputs,
            output_names=outputs,
            opset_version=cfg.opset,
            do_constant_folding=True,
            dynamo=cfg.exporter == "dynamo",
            **shapes,
        )


def _maybe_external(path: Path, cfg: ExportConfig) -> bool:
    """Move weights to model.onnx_data when asked or when the graph is above the threshold."""
    data = path.with_name(artifacts.EXTERNAL_DATA)
    size_mb = (path.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 1e6
    if not cfg.external_data and size_mb <= cfg.external_data_threshold_mb:
        return data.exists()
    import onnx

    graph = onnx.load(str(path))
    for stray in path.parent.iterdir():  # exporter-written shards are folded into one file
        if stray.is_file() and stray.suffix not in (".onnx", ".json") and stray != data:
            stray.unlink()
    tmp = path.with_name(".tmp.onnx")
    onnx.save_model(
        graph,
        str(tmp),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=artifacts.EXTERNAL_DATA,
        size_threshold=1024,
    )
    tmp.replace(path)
    return True


def export(src: str, cfg: ExportConfig, out: Path) -> dict[str, Any]:
    """Export `src` (packaged name or HF directory) into the artifact directory `out`."""
    phases = artifacts.Phases()
    path = models.resolve(src)
    config = models.read_config(path)
    weights = models.weight_files(path, cfg.allow_pickle)
    with phases("import"):  # torch, transformers (and the model class), onnxruntime
        import numpy as np
        import torch

        from edgeslim import parity

        models.import_transformers()
        models.model_class(config, cfg.task)
        import onnxruntime  # noqa: F401
    record = lowbit.read_record(path)  # a qat/binarize output: low-bit layers
    trained_for = ((record or {}).get("method") or {}).get("task")
    if trained_for and trained_for != cfg.task:
        raise InputError(f"{path} is a low-bit {trained_for} model: export it with --task {trained_for}")
    with phases("load"):
        model = models.load(path, cfg.task, cfg.allow_pickle)
    pooling = cfg.pooling or models.default_pooling(path)
    inputs, outputs = _io_names(model, cfg.task)
    wrapper = _wrapper(model, cfg.task, pooling, inputs)
    lowered: dict[str, Any] | None = None
    with phases("export"):
        _export(wrapper, inputs, outputs, cfg, out / artifacts.MODEL)
        if record is not None:  # the fake-quantized model is what the graph must compute
            from edgeslim import lowbit_onnx

            lowbit.attach(model, path, record)  # in place: the wrapper now runs the fake-quantized model
            lowered = lowbit_onnx.lower(out / artifacts.MODEL, out / artifacts.MODEL, model, record)
        external = _maybe_external(out / artifacts.MODEL, cfg)

    max_len = models.max_length(path, config)
    cases = parity.make_inputs(inputs, int(config["vocab_size"]), models.pad_id(config), max_len)
    with phases("reference"), torch.no_grad():  # PyTorch's outputs at the parity shapes
        golden = []
        for feeds in cases:
            result = wrapper(*(torch.from_numpy(feeds[n]) for n in inputs))
            result = result if isinstance(result, tuple) else (result,)
            golden.append({n: r.numpy().astype(np.float32) for n, r in zip(outputs, result, strict=True)})
        parity.save_reference(out / artifacts.REFERENCE, cases, golden)
    with phases("parity"):  # onnxruntime's, compared
        report = parity.check_artifact(out / artifacts.MODEL, out / artifacts.REFERENCE, cfg.atol, cfg.rtol)

    model.config.save_pretrained(out)
    tokenizer = models.save_tokenizer(path, out)
    source = {"path": str(path), "sha256": artifacts.sha256_files([*weights, path / "config.json"])}
    manifest = artifacts.new_manifest(
        cfg.task,
        source,
        model_type=config["model_type"],
        pooling=pooling if cfg.task == "feature-extraction" else None,
        inputs=inputs,
        outputs=outputs,
        max_length=max_len,
        tokenizer_files=tokenizer,
    )
    step = {
        "type": "export",
        "config": cfg.model_dump(),
        "parity": report,
        "duration_s": phases.seconds["export"],
        "phases_s": phases.seconds,
        "external_data": external,
        **({"lowbit": {"method": record["method"], "layers": lowered}} if record and lowered else {}),
    }
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    return {
        "parity_max_abs_diff": report["max_abs_diff"],
        "external_data": external,
        "size_mb": round(artifacts.artifact_size(out) / 1e6, 2),
        "export_s": round(phases.seconds["export"], 2),
    }
