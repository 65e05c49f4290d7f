"""export: a transformers model -> ONNX with dynamic batch/sequence axes, proven against PyTorch.
The export itself is onnx_export.py's (prune and shapes export too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeslim import onnx_export
from edgeslim.flags import DryRun, Force, Output
from edgeslim.onnx_export import ExportConfig
from edgeslim.options import field_option

Config = ExportConfig  # defined beside the export it configures


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Export `src` (packaged name or HF directory) into the artifact directory `out`."""
    return onnx_export.export(src, cfg, out)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    model: Annotated[str, typer.Argument(help="Packaged name (minilm) or local HF directory.")],
    output: Output,
    task: Annotated[str | None, _option("task")] = None,
    pooling: Annotated[str | None, _option("pooling")] = None,
    opset: Annotated[int | None, _option("opset")] = None,
    exporter: Annotated[str | None, _option("exporter")] = None,
    external_data: Annotated[bool | None, _option("external_data")] = None,
    external_data_threshold_mb: Annotated[float | None, _option("external_data_threshold_mb")] = None,
    atol: Annotated[float | None, _option("atol")] = None,
    rtol: Annotated[float | None, _option("rtol")] = None,
    allow_pickle: Annotated[bool | None, _option("allow_pickle")] = None,
    force: Force = False,
    dry_run: DryRun = False,
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
        external_data_threshold_mb=external_data_threshold_mb,
        atol=atol,
        rtol=rtol,
        allow_pickle=allow_pickle,
    )
    run_single(model, cfg, output, force, dry_run)
