"""bench: latency/throughput/memory of artifacts on an execution provider, interleaved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from pydantic import Field

from edgeslim import artifacts
from edgeslim.config import StepConfig
from edgeslim.defaults import BENCH_RUNS, BENCH_WARMUP
from edgeslim.errors import InputError
from edgeslim.flags import DryRun, Json
from edgeslim.options import field_option, positive_list

Positive = Annotated[int, Field(gt=0)]


class Config(StepConfig):
    """Grid and measurement settings."""

    type: Literal["bench"] = "bench"
    host_dependent: ClassVar[bool] = True  # its result depends on the CPU it runs on
    ep: str = Field("cpu", description="Execution provider: cpu, cuda, tensorrt, openvino, ...")
    threads: tuple[Positive, ...] = Field((1, 2), min_length=1, description="Intra-op thread counts.")
    batch: tuple[Positive, ...] = Field((1, 8), min_length=1, description="Batch sizes.")
    seq: tuple[Positive, ...] = Field((32, 128), min_length=1, description="Sequence lengths.")
    runs: int = Field(BENCH_RUNS, ge=5, description="Timed runs per model and grid cell.")
    warmup: int = Field(BENCH_WARMUP, ge=0, description="Untimed runs first.")
    time_budget_s: float = Field(
        0.0, ge=0, description="Stop a cell after this many seconds, even before --runs (0: no limit)."
    )
    allow_fallback: bool = Field(False, description="Let nodes the EP cannot run fall back to CPU.")


def measure(paths: list[Path], cfg: Config) -> dict[str, Any]:
    """Bench artifact directories (or .onnx files), each verified first; names are the
    directory names."""
    from edgeslim import bench, verify

    models: dict[str, Path] = {}
    for path in paths:
        verify.require(path)  # every artifact, before anything is measured
        model = path / artifacts.MODEL if path.is_dir() else path
        name = path.name if path.is_dir() else path.stem
        models[name if name not in models else str(path)] = model
    return bench.run_grid(
        models,
        cfg.ep,
        list(cfg.threads),
        list(cfg.batch),
        list(cfg.seq),
        cfg.runs,
        cfg.warmup,
        cfg.time_budget_s,
        cfg.allow_fallback,
    )


def run(src: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """Carry `src` into `out` with bench.json; the manifest records the headline cell."""
    result = measure([src], cfg)
    artifacts.copy_companions(src, out, skip_model=False)
    artifacts.write_json(out / "bench.json", result)
    manifest = artifacts.read_manifest(src)
    manifest["metrics"] = {**manifest.get("metrics", {}), "bench": result["cells"]}
    step = {"type": "bench", "config": cfg.model_dump(mode="json"), "report": "bench.json"}
    artifacts.write_json(out / artifacts.MANIFEST, artifacts.append_step(manifest, step))
    return {
        f"t{c['threads']} b{c['batch']} s{c['seq']}": f"{c['median_ms']} ms (p90 {c['p90_ms']})"
        for c in result["cells"]
    }


def _ints(text: str | None, option: str) -> tuple[int, ...] | None:
    return None if text is None else positive_list(text, option)


def _option(name: str, *decls: str, help: str | None = None) -> Any:
    return field_option(Config, name, *decls, help=help)


def command(
    paths: Annotated[list[Path], typer.Argument(help="Artifact directories (first = baseline).")],
    ep: Annotated[str | None, _option("ep")] = None,
    threads: Annotated[str | None, _option("threads", help="Intra-op thread counts, e.g. 1,2.")] = None,
    batch: Annotated[str | None, _option("batch", help="Batch sizes, e.g. 1,8.")] = None,
    seq: Annotated[str | None, _option("seq", help="Sequence lengths, e.g. 32,128.")] = None,
    runs: Annotated[int | None, _option("runs")] = None,
    warmup: Annotated[int | None, _option("warmup")] = None,
    time_budget_s: Annotated[float | None, _option("time_budget_s", "--time-budget")] = None,
    ep_library: Annotated[
        str | None,
        typer.Option(help="Register a plugin EP and bench on it: NAME=PATH, NAME as for --ep."),
    ] = None,
    allow_fallback: Annotated[bool | None, _option("allow_fallback")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the results JSON here.")] = None,
    json_out: Json = False,
    dry_run: DryRun = False,
) -> None:
    """Measure latency, throughput and memory; several artifacts run interleaved, with ratio CIs."""
    import json

    from edgeslim import verify
    from edgeslim.config import make_config
    from edgeslim.steps import as_recipe_step

    if ep_library:
        ep = _plugin(ep_library, ep)
    cfg = make_config(
        Config,
        ep=ep,
        threads=_ints(threads, "--threads"),
        batch=_ints(batch, "--batch"),
        seq=_ints(seq, "--seq"),
        runs=runs,
        warmup=warmup,
        time_budget_s=time_budget_s,
        allow_fallback=allow_fallback,
    )
    if dry_run:
        print(as_recipe_step(cfg), end="")
        return
    if out:
        verify.writable_file(out)  # before any work, not after minutes of measuring
    result = measure(paths, cfg)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(out, result)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    print(table(result))


def _plugin(spec: str, ep: str | None) -> str:
    """Register the plugin EP of `--ep-library NAME=PATH`; the EP short name to bench on."""
    from edgeslim import providers

    name, _, library = spec.partition("=")
    if not name or not library:
        raise InputError(f"--ep-library takes NAME=PATH, e.g. openvino=/path/to/plugin.so (got '{spec}')")
    key = providers.known(name)
    if key == "cpu":
        raise InputError("--ep-library is for plugin EPs; the CPU provider is built in: drop --ep-library")
    if ep not in (None, "cpu", key):  # --ep cpu (the default) gives way to the plugin
        raise InputError(f"--ep {ep} conflicts with --ep-library {name}: drop --ep or make them agree")
    providers.register_plugin(providers.PROVIDERS[key][0], Path(library))
    return key


def table(result: dict[str, Any]) -> str:
    """Markdown table of a bench result."""
    lines = [
        f"EP {result['ep']}, baseline {result['baseline']}, placement {result['placement']}",
        "",
        "| model | threads | batch | seq | median ms | p90 ms | p99 ms | seq/s | speedup (95% CI) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in result["cells"]:
        low, high = c["speedup_ci95"]
        lines.append(
            f"| {c['model']} | {c['threads']} | {c['batch']} | {c['seq']} | {c['median_ms']} | "
            f"{c['p90_ms']} | {c['p99_ms']} | {c['throughput_seq_s']} | "
            f"{c['speedup_vs_baseline']} ({low}-{high}) |"
        )
    return "\n".join(lines) + "\n"
