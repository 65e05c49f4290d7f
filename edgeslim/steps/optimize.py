"""optimize: onnxruntime's transformer fusions, a fusion coverage report, parity re-checked.
The fusion itself is fusion.py's (prune and shapes fuse too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeslim import fusion
from edgeslim.fusion import OptimizeConfig
from edgeslim.options import ArtifactArg, Force, Output

Config = OptimizeConfig  # defined beside the fusion it configures


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Fuse the graph of artifact `src` into `out`, check parity and fusion coverage."""
    return fusion.optimize(src, cfg, out)


def command(
    artifact: ArtifactArg,
    output: Output,
    require_full_fusion: Annotated[bool, typer.Option(help="Fail when any layer is left unfused.")] = False,
    opt_level: Annotated[int, typer.Option(help="Extra onnxruntime graph optimizations (0-2).")] = 0,
    fuse_attention: Annotated[bool, typer.Option(help="Fuse attention.")] = True,
    fuse_embeddings: Annotated[bool, typer.Option(help="Fuse the embedding LayerNorm.")] = True,
    atol: Annotated[float, typer.Option(help="Parity absolute tolerance.")] = 1e-4,
    force: Force = False,
) -> None:
    """Fuse attention, LayerNorm and GELU with onnxruntime; report coverage; re-check parity."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        require_full_fusion=require_full_fusion,
        opt_level=opt_level,
        fuse_attention=fuse_attention,
        fuse_embeddings=fuse_embeddings,
        atol=atol,
    )
    run_single(artifact, cfg, output, force)
