"""optimize: onnxruntime's transformer fusions, a fusion coverage report, parity re-checked.
The fusion itself is fusion.py's (prune and shapes fuse too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from edgeslim import fusion
from edgeslim.flags import ArtifactArg, DryRun, Force, Output
from edgeslim.fusion import OptimizeConfig
from edgeslim.options import field_option

Config = OptimizeConfig  # defined beside the fusion it configures


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Fuse the graph of artifact `src` into `out`, check parity and fusion coverage."""
    return fusion.optimize(src, cfg, out)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    artifact: ArtifactArg,
    output: Output,
    opt_level: Annotated[int | None, _option("opt_level")] = None,
    require_full_fusion: Annotated[bool | None, _option("require_full_fusion")] = None,
    fuse_attention: Annotated[bool | None, _option("fuse_attention")] = None,
    fuse_embeddings: Annotated[bool | None, _option("fuse_embeddings")] = None,
    atol: Annotated[float | None, _option("atol")] = None,
    rtol: Annotated[float | None, _option("rtol")] = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Fuse attention, LayerNorm and GELU with onnxruntime; report coverage; re-check parity."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        opt_level=opt_level,
        require_full_fusion=require_full_fusion,
        fuse_attention=fuse_attention,
        fuse_embeddings=fuse_embeddings,
        atol=atol,
        rtol=rtol,
    )
    run_single(artifact, cfg, output, force, dry_run)
