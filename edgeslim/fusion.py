"""onnxruntime's transformer fusions on an artifact, a fusion coverage report, parity re-checked
(the optimize step's Config and run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgeslim import artifacts, models, ui
from edgeslim.config import StepConfig
from edgeslim.defaults import PARITY_ATOL, PARITY_RTOL
from edgeslim.errors import InputError, ValidationFailed


class OptimizeConfig(StepConfig):
    """Fusion settings; num_heads and hidden_size always come from the model's config."""

    type: Literal["optimize"] = "optimize"
    opt_level: int = Field(
        0,
        ge=0,
        le=2,
        description="onnxruntime graph optimizations on top of fusion (0 keeps the graph portable).",
    )
    require_full_fusion: bool = Field(False, description="Fail when any layer is left unfused.")
    fuse_attention: bool = Field(
        True, description="Fuse attention (off keeps Q/K/V MatMuls, e.g. for weight-only quantization)."
    )
    fuse_embeddings: bool = Field(
        True, description="Fuse EmbedLayerNormalization (quantize makes it QEmbedLayerNormalization)."
    )
    atol: float = Field(PARITY_ATOL, gt=0, description="Parity: absolute tolerance.")
    rtol: float = Field(PARITY_RTOL, ge=0, description="Parity: relative tolerance.")


def shape_facts(config: dict[str, Any]) -> tuple[int, int]:
    """(num_heads, hidden_size) from a HF config; a wrong value silently skips fusion."""
    if config.get("pruned_heads"):  # heads per layer differ from the config: let the fuser read the graph
        return 0, 0
    heads = config.get("num_attention_heads") or config.get("n_heads")
    hidden = config.get("hidden_size") or config.get("dim")
    if not heads or not hidden:
        raise InputError("config.json lacks num_attention_heads/hidden_size: re-export the model")
    return int(heads), int(hidden)


def _fuse(
    src: Path,
    out: Path,
    arch: models.Arch,
    config: dict[str, Any],
    cfg: OptimizeConfig,
    shape_inference: bool,
) -> dict[str, Any]:
    """One pass of onnxruntime's fuser into `out`; returns the fusion report."""
    from collections import Counter

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from edgeslim import inspection

    heads, hidden = shape_facts(config)
    options = FusionOptions(arch.ort_model_type)
    options.enable_shape_inference = shape_inference
    options.enable_attention = cfg.fuse_attention
    options.enable_embed_layer_norm = cfg.fuse_embeddings
    with ui.quiet_logs():
        fused = optimize_model(
            str(src / artifacts.MODEL),
            model_type=arch.ort_model_type,
            num_heads=heads,
            hidden_size=hidden,
            opt_level=cfg.opt_level,
            use_gpu=False,
            optimization_options=options,
        )
    for stale in artifacts.model_files(out):
        stale.unlink()
    external = len(artifacts.model_files(src)) > 1
    fused.save_model_to_file(str(out / artifacts.MODEL), use_external_data_format=external)
    off = {
        k
        for k, on in (("attention", cfg.fuse_attention), ("embed_layer_norm", cfg.fuse_embeddings))
        if not on
    }
    report = inspection.fusion_report(Counter(n.op_type for n in fused.model.graph.node), config, off)
    return {**report, "shape_inference": shape_inference}


def optimize(src: Path, cfg: OptimizeConfig, out: Path) -> dict[str, Any]:
    """Fuse the graph of artifact `src` into `out`, check parity and fusion coverage.

    The fuser's symbolic shape inference costs ~2/3 of its time on MiniLM and did not change
    what it fused there, so the first pass runs without it; parity (always checked) or an
    incomplete fusion sends it to a second pass with shape inference.
    """
    from edgeslim import inspection, parity
    from edgeslim.errors import ParityError

    manifest = artifacts.read_manifest(src)
    inspection.load_graph(src / artifacts.MODEL)  # a corrupt file fails here, as bad input
    config = models.read_config(src)  # an object, a supported architecture, sane sizes
    arch = models.arch_of(config)
    if not (src / artifacts.REFERENCE).is_file():
        raise InputError(f"{src} has no {artifacts.REFERENCE}: re-export the artifact (parity needs it)")
    phases = artifacts.Phases()
    artifacts.copy_companions(src, out)
    with phases("fuse"):  # importing onnxruntime's transformers optimizer is part of it
        report, check = _fuse(src, out, arch, config, cfg, shape_inference=False), None
    try:
        with phases("parity"):
            check = parity.check_artifact(
                out / artifacts.MODEL, out / artifacts.REFERENCE, cfg.atol, cfg.rtol
            )
    except ParityError:
        report = {}
    if not report.get("full"):
        with phases("fuse with shape inference"):
            report = _fuse(src, out, arch, config, cfg, shape_inference=True)
        with phases("parity"):
            check = parity.check_artifact(
                out / artifacts.MODEL, out / artifacts.REFERENCE, cfg.atol, cfg.rtol
            )
    if not arch.fuses_attention:
        report["note"] = (
            f"{config['model_type']}: onnxruntime has no fused attention for this "
            "architecture, so attention stays unfused"
        )
    if cfg.require_full_fusion and not report["full"]:
        missing = [
            f"{k} {v['found']}/{v['expected']}"
            for k, v in report["kinds"].items()
            if v["status"] in ("partial", "none")
        ]
        raise ValidationFailed(
            f"fusion incomplete ({', '.join(missing)})"
            + (f": {report['note']}" if "note" in report else "")
            + "; drop --require-full-fusion to accept a partly fused graph"
        )
    step = {
        "type": "optimize",
        "config": cfg.model_dump(),
        "fusion": report,
        "parity": check,
        "duration_s": round(sum(phases.seconds.values()), 3),
        "phases_s": phases.seconds,
    }
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    coverage = {
        k: f"{v['found']}/{v['expected']}" for k, v in report["kinds"].items() if v["status"] != "n/a"
    }
    return {
        "fusion": coverage,
        "parity_max_abs_diff": check["max_abs_diff"] if check else None,
        "size_mb": round(artifacts.artifact_size(out) / 1e6, 2),
    }
