"""export: a transformers model -> ONNX with dynamic batch/sequence axes, proven against PyTorch.
The export itself is onnx_export.py's (prune and shapes export too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeslim import models, onnx_export
from edgeslim.onnx_export import ExportConfig
from edgeslim.options import Force, Output

Config = ExportConfig  # defined beside the export it configures


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Export `src` (packaged name or HF directory) into the artifact directory `out`."""
    return onnx_export.export(src, cfg, out)


def command(
    model: Annotated[str, typer.Argument(help="Packaged name (minilm) or local HF directory.")],
    output: Output,
    task: Annotated[str, typer.Option(help="Model head: " + ", ".join(models.TASKS))] = "feature-extraction",
    pooling: Annotated[str | None, typer.Option(help="Embedding pooling: mean or cls.")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    exporter: Annotated[str, typer.Option(help="torchscript (fuses fully) or dynamo.")] = "torchscript",
    external_data: Annotated[bool, typer.Option(help="Weights in model.onnx_data.")] = False,
    atol: Annotated[float, typer.Option(help="Parity absolute tolerance.")] = 1e-4,
    allow_pickle: Annotated[bool, typer.Option(help="Allow pickle (.bin) weights.")] = False,
    force: Force = False,
) -> None:
    """Export a model to ONNX and prove parity with PyTorch at unseen shapes."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        task=task,
        pooling=pooling,
        opset=opset,
        exporter=exporter,
        external_data=external_data,
        atol=atol,
        allow_pickle=allow_pickle,
    )
    run_single(model, cfg, output, force)
