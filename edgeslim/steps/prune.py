"""prune: remove attention heads, FFN neurons and layers by importance; optionally recover
accuracy by distilling from the unpruned teacher. Output: a smaller HF directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from pydantic import Field

from edgeslim import models
from edgeslim.config import StepConfig
from edgeslim.defaults import BENCH_WARMUP, QUICK_RUNS
from edgeslim.errors import InputError
from edgeslim.flags import DryRun, Force, Output
from edgeslim.options import field_option


class Config(StepConfig):
    """What to remove and how to rank it; recovery settings."""

    takes_model: ClassVar[bool] = True
    produces_model: ClassVar[bool] = True
    type: Literal["prune"] = "prune"
    heads: float | None = Field(None, gt=0, lt=1, description="Fraction of heads to remove in every layer.")
    ffn: float | None = Field(
        None, gt=0, lt=1, description="Fraction of FFN neurons to remove in every layer."
    )
    keep_layers: str | None = Field(None, description="Layers to keep, e.g. 0,2,4 (others removed).")
    unstructured: float | None = Field(
        None, gt=0, lt=1, description="Unstructured sparsity of every encoder weight matrix."
    )
    method: Literal["magnitude", "movement"] = Field(
        "magnitude", description="Unstructured scores: |W|, or movement (learned while distilling)."
    )
    schedule: Literal["oneshot", "cubic"] | None = Field(
        None, description="Unstructured: all at once, or cubic during recovery (default with --recover-with)."
    )
    importance: Literal["magnitude", "taylor"] = Field("magnitude", description="How to rank what to remove.")
    heads_scope: Literal["layer", "global"] = Field(
        "layer",
        description="Rank heads within each layer (same count everywhere) or across the model (layers "
        "keep different numbers of heads). FFN sizes stay equal per layer: transformers' BERT config "
        "has one intermediate_size.",
    )
    data: str = Field("sst2:train", description="Labelled data for Taylor importance and recovery.")
    importance_batches: int = Field(8, gt=0, description="Batches of 32 for Taylor importance.")
    recover_with: Path | None = Field(None, description="Teacher to distill from after pruning.")
    recover_steps: int = Field(300, gt=0, description="Recovery distillation steps.")
    eval: str = Field("sst2:dev", description="Dev data for recovery.")
    max_length: int = Field(128, gt=1, description="Max tokens for importance and recovery.")
    seed: int = Field(0, description="Seed.")
    cycles: int = Field(1, ge=1, description="Prune -> recover cycles reaching the fractions gradually.")
    target_params: int | None = Field(
        None, gt=0, description="Stop the cycles once at most this many parameters."
    )
    target_latency: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Stop the cycles once the model's measured latency is at most this fraction of the "
        "source's (both exported and fused, onnxruntime CPU, batch 1, side by side).",
    )
    latency_seq: int = Field(128, gt=1, description="Sequence length of the latency measurement.")
    latency_threads: int = Field(2, gt=0, description="Threads of the latency measurement.")

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        """Recovery is training: its `.NAME.partial` (checkpoint) survives a kill, to resume."""
        return self.recover_with is not None


def _importance_batches(path: Path, cfg: Config) -> list[dict[str, Any]]:
    from edgeslim import data, evaluation
    from edgeslim.train.batches import collate, encode

    examples = data.load_labelled(cfg.data, None, None, None, None, 32 * cfg.importance_batches)
    labels = [int(x) for x in evaluation.label_ids(examples, path)]
    encoded = encode(path, examples, cfg.max_length, labels)
    return [
        collate(encoded, list(range(i, min(i + 32, len(encoded)))), 0, "class")
        for i in range(0, len(encoded), 32)
    ]


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Prune model `src` into the HF directory `out` (then recover when asked)."""
    import torch

    from edgeslim import pruning
    from edgeslim.train import distill, students
    from edgeslim.train.config import fingerprint

    if not (cfg.heads or cfg.ffn or cfg.keep_layers or cfg.unstructured):
        raise InputError("nothing to prune: give --heads, --ffn, --keep-layers and/or --unstructured")
    from edgeslim import lowbit

    lowbit.refuse(models.resolve(src), "prune")
    if cfg.recover_with:  # the teacher and the data are checked before anything is pruned
        distill.check_recovery(cfg)
    if cfg.cycles > 1:
        return _cycles(src, cfg, out)
    if cfg.target_params or cfg.target_latency:
        raise InputError("--target-params and --target-latency end --cycles early: give --cycles N (N > 1)")
    hook_factory = _sparsifier(cfg)
    path = models.resolve(src)
    config = models.read_config(path)
    if config.get("shared_layer_groups"):
        raise InputError(
            f"{path} shares weights across layers ({config['shared_layer_groups']}): pruning would "
            "rank each copy apart; prune first, then share with 'edgeslim simplify --share-layers'"
        )
    task = models.head_task(config)
    torch.manual_seed(cfg.seed)
    model = models.load(path, task)
    before = pruning.count(model)
    if cfg.importance == "taylor" and task != "sequence-classification":
        raise InputError("Taylor importance needs a sequence-classification model with labels; use magnitude")
    batches = _importance_batches(path, cfg) if cfg.importance == "taylor" else None
    record: dict[str, Any] = {
        "type": "prune",
        "source": str(path),
        "config": cfg.model_dump(mode="json"),
        "parameters_before": before,
    }
    if cfg.keep_layers:
        mapping = students.layer_map(model.config.num_hidden_layers, None, cfg.keep_layers)
        model = students.reduce_layers(model, mapping)
        record["kept_layers"] = mapping
    if cfg.heads:
        record["removed_heads"] = pruning.prune_heads_(
            model, cfg.heads, pruning.head_importance(model, batches), cfg.heads_scope
        )
    if cfg.ffn:
        record["ffn_sizes"] = pruning.prune_ffn_(model, cfg.ffn, pruning.ffn_importance(model, batches))
    record["parameters_after"] = pruning.count(model)
    if cfg.unstructured and hook_factory is None:
        from edgeslim import sparsity

        oneshot = sparsity.Sparsifier(model, cfg.unstructured, "magnitude", "oneshot")
        oneshot.after_step(0, 1)
        record["sparsity"] = oneshot.report()
    pruned = out / "pruned" if cfg.recover_with else out
    model.save_pretrained(pruned)
    models.save_tokenizer(path, pruned)
    if cfg.recover_with:
        owner = fingerprint(src, cfg)  # the checkpoint resumes only this prune (source, fractions)
        record["recovery"] = distill.recover(pruned, cfg.recover_with, cfg, out, hook_factory, owner)
        if hook_factory is not None:
            record["sparsity"] = record["recovery"].pop("sparsity")
    if cfg.unstructured:
        record["zipped_bytes"] = {
            "before": pruning.zipped_size(path / "model.safetensors"),
            "after": pruning.zipped_size(out / "model.safetensors"),
        }
        record["note"] = (
            "onnxruntime's CPU kernels do not skip zeros: a compressed-size win, not a speed win; "
            "for speed remove whole rows/columns with --heads/--ffn/--keep-layers"
        )
    (out / "edgeslim-prune.json").write_text(json.dumps(record, indent=2) + "\n")
    return {
        "parameters": f"{before:,} -> {record['parameters_after']:,}",
        **({"recovered": record["recovery"]["student_best"]} if cfg.recover_with else {}),
        **({k: record[k] for k in ("sparsity", "zipped_bytes")} if cfg.unstructured else {}),
    }


def _sparsifier(cfg: Config) -> Any:
    """The trainer hook that sparsifies during recovery, or None for one-shot magnitude."""
    if not cfg.unstructured:
        if cfg.method != "magnitude" or cfg.schedule:
            raise InputError("--method and --schedule apply to --unstructured pruning: give --unstructured")
        return None
    if not cfg.recover_with:
        if cfg.method == "movement" or cfg.schedule == "cubic":
            raise InputError(
                f"{'movement pruning' if cfg.method == 'movement' else 'a cubic schedule'} happens while "
                "distilling: give --recover-with TEACHER (and --data)"
            )
        return None
    from edgeslim import sparsity

    target, method, schedule = cfg.unstructured, cfg.method, cfg.schedule or "cubic"
    return lambda student: sparsity.Sparsifier(student, target, method, schedule)


def _cycles(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Reach the head/FFN fractions over `cycles` prune -> recover rounds (each removes the same
    fraction of what is left), tracking parameters and the dev metric per cycle."""
    import shutil

    if cfg.unstructured or not cfg.recover_with:
        raise InputError(
            "--cycles alternates structured pruning with recovery: give --recover-with, not --unstructured"
        )
    shutil.rmtree(out / ".latency", ignore_errors=True)  # a killed run's half-made exports
    latency = _Latency(src, out / ".latency", cfg) if cfg.target_latency else None

    def per_cycle(total: float | None) -> float | None:
        return None if total is None else 1 - (1 - total) ** (1 / cfg.cycles)

    current, history = src, []
    for cycle in range(cfg.cycles):
        step_cfg = cfg.model_copy(
            update={
                "cycles": 1,
                "heads": per_cycle(cfg.heads),
                "ffn": per_cycle(cfg.ffn),
                "keep_layers": cfg.keep_layers if cycle == 0 else None,
                "target_params": None,
                "target_latency": None,
            }
        )
        directory = out / f"cycle{cycle + 1}"
        entry = _cycle(current, step_cfg, directory, cycle + 1, latency)
        history.append(entry)
        current = str(directory)
        if cfg.target_params and entry["parameters"] <= cfg.target_params:
            break
        if cfg.target_latency and entry["latency_fraction"] <= cfg.target_latency:
            break
    for item in Path(current).iterdir():
        if item.name != CYCLE_DONE:
            shutil.move(str(item), out / item.name)
    for cycle in range(cfg.cycles):
        shutil.rmtree(out / f"cycle{cycle + 1}", ignore_errors=True)
    shutil.rmtree(out / ".latency", ignore_errors=True)
    final = json.loads((out / "edgeslim-prune.json").read_text())
    final["cycles"] = history
    (out / "edgeslim-prune.json").write_text(json.dumps(final, indent=2) + "\n")
    return {"cycles": history}


CYCLE_DONE = ".cycle.json"  # a finished cycle's entry: a rerun after a kill skips that cycle


def _cycle(src: str, cfg: Config, directory: Path, number: int, latency: _Latency | None) -> dict[str, Any]:
    """One prune -> recover cycle into `directory` (resumed by a rerun), and its history entry."""
    done = directory / CYCLE_DONE
    try:
        entry: dict[str, Any] = json.loads(done.read_text())
        return entry
    except (OSError, ValueError):  # not finished (or the file was damaged): run the cycle
        pass
    directory.mkdir(exist_ok=True)
    run(src, cfg, directory)
    record = json.loads((directory / "edgeslim-prune.json").read_text())
    entry = {
        "cycle": number,
        "parameters": record["parameters_after"],
        "dev": record["recovery"]["student_best"],
    }
    if latency is not None:
        entry["latency_fraction"] = latency.fraction(directory)
    tmp = done.with_name(f"{CYCLE_DONE}.tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, done)
    return entry


class _Latency:
    """Measured latency of each cycle's model as a fraction of the source's: both exported and
    fused, onnxruntime CPU, batch 1, timed interleaved in one process (ratios, not absolute ms,
    because shared machines drift)."""

    def __init__(self, source: str, work: Path, cfg: Config) -> None:
        path = models.resolve(source)
        limit = models.max_length(path, models.read_config(path))
        if limit and cfg.latency_seq > limit:
            raise InputError(
                f"--latency-seq {cfg.latency_seq} exceeds the model's max length {limit}: lower it"
            )
        self.work, self.cfg = work, cfg
        work.mkdir()
        self.source = self._onnx(source, "source")

    def _onnx(self, model: str, name: str) -> Path:
        from edgeslim import fusion, onnx_export

        task = models.head_task(models.read_config(models.resolve(model)))
        raw, fused = self.work / f"{name}-export", self.work / name
        raw.mkdir()
        fused.mkdir()
        onnx_export.export(model, onnx_export.ExportConfig.model_validate({"task": task}), raw)
        fusion.optimize(raw, fusion.OptimizeConfig(), fused)
        return fused / "model.onnx"

    def fraction(self, model_dir: Path) -> float:
        from edgeslim import bench

        candidate = self._onnx(str(model_dir), model_dir.name)
        result = bench.run_grid(
            {"source": self.source, "candidate": candidate},
            "cpu",
            [self.cfg.latency_threads],
            [1],
            [self.cfg.latency_seq],
            runs=QUICK_RUNS,
            warmup=BENCH_WARMUP,
            time_budget_s=0.0,
        )
        medians = {c["model"]: c["median_ms"] for c in result["cells"]}
        return round(medians["candidate"] / medians["source"], 3)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    model: Annotated[str, typer.Argument(help="Model directory (fine-tuned student or teacher).")],
    output: Output,
    heads: Annotated[float | None, _option("heads")] = None,
    ffn: Annotated[float | None, _option("ffn")] = None,
    keep_layers: Annotated[str | None, _option("keep_layers")] = None,
    unstructured: Annotated[float | None, _option("unstructured")] = None,
    method: Annotated[str | None, _option("method")] = None,
    schedule: Annotated[str | None, _option("schedule")] = None,
    importance: Annotated[str | None, _option("importance")] = None,
    heads_scope: Annotated[str | None, _option("heads_scope")] = None,
    data: Annotated[str | None, _option("data")] = None,
    importance_batches: Annotated[int | None, _option("importance_batches")] = None,
    recover_with: Annotated[Path | None, _option("recover_with")] = None,
    recover_steps: Annotated[int | None, _option("recover_steps")] = None,
    eval: Annotated[str | None, _option("eval", "--eval")] = None,
    max_length: Annotated[int | None, _option("max_length")] = None,
    seed: Annotated[int | None, _option("seed")] = None,
    cycles: Annotated[int | None, _option("cycles")] = None,
    target_params: Annotated[int | None, _option("target_params")] = None,
    target_latency: Annotated[float | None, _option("target_latency")] = None,
    latency_seq: Annotated[int | None, _option("latency_seq")] = None,
    latency_threads: Annotated[int | None, _option("latency_threads")] = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Remove heads, FFN neurons and layers (a smaller real model), then optionally recover."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        heads=heads,
        ffn=ffn,
        keep_layers=keep_layers,
        unstructured=unstructured,
        method=method,
        schedule=schedule,
        importance=importance,
        heads_scope=heads_scope,
        data=data,
        importance_batches=importance_batches,
        recover_with=recover_with,
        recover_steps=recover_steps,
        eval=eval,
        max_length=max_length,
        seed=seed,
        cycles=cycles,
        target_params=target_params,
        target_latency=target_latency,
        latency_seq=latency_seq,
        latency_threads=latency_threads,
    )
    run_single(model, cfg, output, force, dry_run)
