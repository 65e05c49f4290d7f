"""inspect: size, parameters, dtypes, op histogram, quantized ops, fusion coverage, manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from edgeslim import artifacts
from edgeslim.config import StepConfig
from edgeslim.flags import ArtifactArg, DryRun, Json


class Config(StepConfig):
    """inspect has no settings; as a recipe step it writes inspect.json and inspect.md."""

    type: Literal["inspect"] = "inspect"


def to_markdown(report: dict[str, Any]) -> str:
    """The inspect report as Markdown (what the terminal shows, and inspect.md)."""
    lines = [
        f"# {report['path']}",
        "",
        f"- size: {report['size_bytes'] / 1e6:.2f} MB"
        + (" (with external data)" if report["external_data"] else ""),
        f"- parameters: {report['parameters']:,}",
        f"- opset: {report['opset']}",
        f"- nodes: {report['nodes']}",
        "",
    ]
    lines += ["| initializer dtype | bytes |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["initializer_bytes"].items()]
    lines += ["", "| input/output | shape | dtype |", "|---|---|---|"]
    for io in report["inputs"] + report["outputs"]:
        lines.append(f"| {io['name']} | {io['shape']} | {io['dtype']} |")
    lines += ["", "| op | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in report["ops"].items()]
    if report["quantized_ops"]:
        lines += ["", "quantized ops: " + ", ".join(f"{k} {v}" for k, v in report["quantized_ops"].items())]
    if report.get("weight_bits"):
        lines += ["", "| weights of | count | bytes | bits per weight |", "|---|---:|---:|---:|"]
        for kind, v in report["weight_bits"].items():
            lines.append(f"| {kind} | {v['weights']:,} | {v['bytes']:,} | {v['bits_per_weight']} |")
    if "fusion" in report:
        lines += ["", "| fused kind | found / expected | status |", "|---|---:|---|"]
        for kind, v in report["fusion"]["kinds"].items():
            lines.append(f"| {kind} | {v['found']}/{v['expected']} | {v['status']} |")
    if "manifest" in report:
        m = report["manifest"]
        lines += [
            "",
            f"manifest: task {m['task']}, model_type {m['model_type']}, "
            f"source sha256 {str((m['source'] or {}).get('sha256'))[:12]}",
            "steps: " + " -> ".join(str(s["type"]) for s in m["steps"]),
        ]
        for s in m["steps"]:
            if "parity_max_abs_diff" in s:
                lines.append(f"- {s['type']}: parity max abs diff {s['parity_max_abs_diff']:.2e}")
            for output, figures in s.get("fidelity", {}).items():
                shown = ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
                lines.append(f"- {s['type']} ({s['mode']}) fidelity vs fp32, {output}: {shown}")
    return "\n".join(lines) + "\n"


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Carry artifact `src` into `out` unchanged, adding inspect.json and inspect.md."""
    from edgeslim import inspection

    manifest = artifacts.read_manifest(src)
    report = inspection.inspect(src)
    artifacts.copy_companions(src, out, skip_model=False)
    report["path"] = artifacts.MODEL
    artifacts.write_json(out / "inspect.json", report)
    (out / "inspect.md").write_text(to_markdown(report))
    step = {"type": "inspect", "config": cfg.model_dump(), "report": "inspect.json"}
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    return {
        "report": "inspect.md",
        "parameters": report["parameters"],
        "size_mb": round(report["size_bytes"] / 1e6, 2),
    }


def command(artifact: ArtifactArg, json_out: Json = False, dry_run: DryRun = False) -> None:
    """Show what is inside an artifact directory or a .onnx file."""
    import json

    from edgeslim import inspection, ui
    from edgeslim.steps import as_recipe_step

    if dry_run:
        print(as_recipe_step(Config()), end="")
        return
    report = inspection.inspect(artifact)
    if json_out:
        print(json.dumps(report, indent=2, default=str))
    else:
        ui.markdown(to_markdown(report))
