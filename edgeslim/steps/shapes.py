"""shapes: pick a student shape by measurement. Each candidate shape (layers x hidden x heads x
FFN) is built, exported, fused and dynamically quantized to int8 the way the pipeline does it,
then timed interleaved with the teacher's own int8 at the target threads, batch and length; the
shapes under the latency target are kept, and with distill_steps > 0 distilled from the teacher
and scored on dev data as int8. Pareto sets are printed and written."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from pydantic import Field, model_validator

from edgeslim import artifacts, models, shapes, ui
from edgeslim.config import StepConfig
from edgeslim.defaults import QUICK_RUNS, QUICK_WARMUP
from edgeslim.errors import BudgetNotMet, InputError
from edgeslim.flags import DryRun, Force, Output
from edgeslim.options import (
    Alpha,
    Attention,
    Cosine,
    Kl,
    MinConfidence,
    Mse,
    Nll,
    SoftCe,
    Temperature,
    field_option,
    losses,
    positive_list,
)
from edgeslim.shapes import Shape
from edgeslim.train.config import DistillConfig, Weights

Positive = Annotated[int, Field(gt=0)]
Ratio = Annotated[float, Field(gt=0)]
Timer = Callable[[dict[str, Path], "Config"], dict[str, Any]]  # (int8 models, cfg) -> bench result
TEACHER = "teacher"
RECORD = "edgeslim-shapes.json"


class Config(StepConfig):
    """The candidate grid (None: the teacher's value), where to time it, the latency target,
    and the distillation of the kept shapes."""

    type: Literal["shapes"] = "shapes"
    takes_model: ClassVar[bool] = True
    host_dependent: ClassVar[bool] = True  # it times models on this CPU
    layers: tuple[Positive, ...] | None = Field(
        None, min_length=1, description="Layer counts (default: the teacher's)."
    )
    hidden: tuple[Positive, ...] | None = Field(
        None, min_length=1, description="Hidden widths (default: the teacher's)."
    )
    heads: tuple[Positive, ...] | None = Field(
        None, min_length=1, description="Attention head counts (default: the teacher's)."
    )
    head_dim: tuple[Positive, ...] | None = Field(
        None, min_length=1, description="Or head widths: heads = hidden / head_dim (default: the teacher's)."
    )
    ffn: tuple[Positive, ...] | None = Field(
        None, min_length=1, description="FFN (intermediate) widths (default: the teacher's)."
    )
    ffn_ratio: tuple[Ratio, ...] | None = Field(
        None, min_length=1, description="Or FFN width / hidden width (default: the teacher's ratio)."
    )
    threads: Positive = Field(1, description="Intra-op threads of the target.")
    seq: Positive = Field(128, description="Sequence length timed (padded).")
    batch: Positive = Field(1, description="Batch size timed.")
    latency_ms: float | None = Field(
        None, gt=0, description="Keep shapes whose median latency is at most this."
    )
    speedup: float | None = Field(
        None, gt=0, description="Keep shapes at least this much faster than the teacher's int8."
    )
    runs: int = Field(QUICK_RUNS, ge=3, description="Timed runs per model (interleaved).")
    warmup: int = Field(QUICK_WARMUP, ge=0, description="Untimed runs per model first.")
    keep: Positive = Field(3, description="How many kept shapes to distill.")
    order: Literal["pareto", "fastest"] = Field(
        "pareto",
        description="Which kept shapes to distill first: pareto (those no kept shape beats with more "
        "encoder parameters at a lower latency, most parameters first, then the rest) or fastest.",
    )
    distill_steps: int = Field(0, ge=0, description="Distillation steps per kept shape (0: timing only).")
    trim_vocab: str | None = Field(
        None, description="Time candidates with the vocabulary trimmed to this corpus."
    )
    seed: int = Field(0, description="Seed of the candidates' random weights and of distillation.")
    data: str = Field("sst2:train", description="distill: training data.")
    eval: str | None = Field(None, description="distill and scoring: dev data (default: --data's dev split).")
    unlabeled: str | None = Field(None, description="distill: unlabeled text for pseudo-labels.")
    unlabeled_size: int | None = Field(None, gt=0, description="distill: first N unlabeled texts.")
    train_size: int | None = Field(None, gt=0, description="distill: first N training examples.")
    eval_size: int | None = Field(None, gt=0, description="distill and scoring: first N dev examples.")
    batch_size: int = Field(32, gt=0, description="distill: examples per step.")
    lr: float = Field(1e-4, gt=0, description="distill: peak learning rate.")
    max_length: int = Field(128, gt=1, description="distill: truncate inputs to this many tokens.")
    data_dir: Path | None = Field(None, description="Where built-in datasets live.")
    losses: Weights = Field(default_factory=Weights, description="distill: loss terms and weights.")

    @property
    def produces_model(self) -> bool:  # type: ignore[override]
        """With distillation the output is the chosen student (a HF directory) for the next step."""
        return self.distill_steps > 0

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        """Distillation is training: finished students and the current checkpoint survive a kill."""
        return self.distill_steps > 0

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.latency_ms is None and self.speedup is None:
            raise ValueError(
                "give a latency target: latency_ms (max median ms) and/or speedup (vs the teacher's int8)"
            )
        for a, b in (("heads", "head_dim"), ("ffn", "ffn_ratio")):
            if getattr(self, a) is not None and getattr(self, b) is not None:
                raise ValueError(f"give {a} or {b}, not both")
        if all(
            getattr(self, k) is None for k in ("layers", "hidden", "heads", "head_dim", "ffn", "ffn_ratio")
        ):
            raise ValueError(
                "the grid is empty: give layers, hidden, heads (or head_dim) and/or ffn (or ffn_ratio)"
            )
        return self


def build(teacher: Path, shape: Shape, task: str, seed: int, out: Path, texts: list[str]) -> tuple[int, int]:
    """Save a seeded random model of `shape` (the teacher's architecture, head and tokenizer)
    into `out`; with `texts`, its vocabulary trimmed to them. Returns (parameters, parameters
    outside the embedding tables)."""
    import torch

    from edgeslim import simplify

    transformers = models.import_transformers()
    config = transformers.AutoConfig.from_pretrained(teacher, local_files_only=True)
    for field, (key, alt) in shapes.KEYS.items():
        setattr(config, key if hasattr(config, key) else alt, getattr(shape, field))
    auto: Any = transformers.AutoModel
    if task != "feature-extraction":
        auto = transformers.AutoModelForSequenceClassification
    torch.manual_seed(seed)
    model = auto.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # fresh inits repeat values (zero biases, unit LayerNorm weights), which
        for param in model.parameters():  # the exporter stores once: the file would be too small
            param.add_(0.02 * torch.randn_like(param))
    out.mkdir(parents=True)
    models.save_tokenizer(teacher, out)
    if texts:
        simplify.trim_vocabulary_(model, teacher, texts, out)
    model.save_pretrained(out)
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    return total, total - sum(p.numel() for n, p in named if ".embeddings." in f".{n}")


def int8(model_dir: Path, task: str, work: Path) -> Path:
    """The int8 artifact a default recipe makes of `model_dir`: export, optimize (fused), dynamic
    int8 with the embedding tables quantized (quantize's defaults); intermediates removed."""
    from edgeslim import fusion, onnx_export
    from edgeslim.steps import quantize

    fp32, fused, q = work / "fp32", work / "fused", work / "int8"
    for folder in (fp32, fused, q):
        folder.mkdir(parents=True)
    with contextlib.redirect_stderr(io.StringIO()):  # their notes (parity, SQNR) would drown ours
        onnx_export.export(str(model_dir), onnx_export.ExportConfig(task=task), fp32)
        fusion.optimize(fp32, fusion.OptimizeConfig(), fused)
        quantize.run(fused, quantize.Config(mode="dynamic", fidelity_size=8), q)
    shutil.rmtree(fp32)
    shutil.rmtree(fused)
    return q


def measure(paths: dict[str, Path], cfg: Config) -> dict[str, Any]:
    """bench's interleaved timing (spinning off) of the int8 models; the teacher first."""
    from edgeslim import bench

    files = {name: path / artifacts.MODEL for name, path in paths.items()}
    return bench.run_grid(files, "cpu", [cfg.threads], [cfg.batch], [cfg.seq], cfg.runs, cfg.warmup, 0.0)


def _row(shape: Shape, counts: tuple[int, int], directory: Path, cell: dict[str, Any]) -> shapes.Row:
    return {
        "name": shape.name,
        "shape": asdict(shape),
        "parameters": counts[0],
        "encoder_parameters": counts[1],
        "size_mb": round(artifacts.artifact_size(directory) / 1e6, 3),
        "median_ms": cell["median_ms"],
        "p90_ms": cell["p90_ms"],
        "runs": cell["runs"],
        "speedup": cell["speedup_vs_baseline"],  # teacher median / this median
        "speedup_ci95": cell["speedup_ci95"],
    }


def plan(cfg: Config, config: dict[str, Any], task: str) -> tuple[list[Shape], list[shapes.Row]]:
    """The valid candidates and the skipped ones; with distillation, also those distill cannot
    build from this teacher (students.target_width's checks, e.g. heads wider than the teacher's)."""
    grid = shapes.Grid(cfg.layers, cfg.hidden, cfg.heads, cfg.head_dim, cfg.ffn, cfg.ffn_ratio)
    base = shapes.of_config(config)
    valid, skipped = shapes.candidates(grid, base)
    if not cfg.distill_steps:
        return valid, skipped
    from edgeslim.train import students

    buildable = []
    for shape in valid:
        try:
            width = students.target_width(config, *_widths(shape, base))
            if width is not None and task == "feature-extraction":
                raise InputError("an embedding teacher's student keeps the teacher's width")
            buildable.append(shape)
        except InputError as exc:
            skipped.append({"name": shape.name, "shape": asdict(shape), "note": f"cannot distill: {exc}"})
    return buildable, skipped


def _widths(shape: Shape, base: Shape) -> tuple[int | None, int | None, int | None]:
    """distill's student_hidden/heads/ffn for `shape`: None where it is the teacher's value."""

    def own(value: int, teacher: int) -> int | None:
        return None if value == teacher else value

    return own(shape.hidden, base.hidden), own(shape.heads, base.heads), own(shape.ffn, base.ffn)


def time_candidates(
    teacher: Path, cfg: Config, work: Path, timer: Timer
) -> tuple[shapes.Row, list[shapes.Row], list[shapes.Row], dict[str, Any]]:
    """Build and time every valid candidate with the teacher's int8 as reference.
    Returns (teacher row, candidate rows, skipped, the timer's result)."""
    from edgeslim import data
    from edgeslim.train.distill import teacher_task

    config = models.read_config(teacher)
    task, base = teacher_task(config), shapes.of_config(config)
    valid, skipped = plan(cfg, config, task)
    for skip in skipped:
        ui.note(f"shapes: skipped {skip.get('name') or skip['shape']}: {skip['note']}")
    if not valid:
        raise InputError("no valid candidate shape in the grid (see the notes above): change the grid")
    texts = data.load(cfg.trim_vocab, None, None, None, cfg.data_dir).texts if cfg.trim_vocab else []
    paths = {TEACHER: int8(teacher, task, work / TEACHER)}
    for note in artifacts.read_manifest(paths[TEACHER])["steps"][-1]["notes"]:  # e.g. no AVX2 here
        ui.note(f"shapes: note: {note}")
    counts = {TEACHER: build(teacher, base, task, cfg.seed, work / "teacher-shape", [])}
    for index, shape in enumerate(valid):
        ui.note(f"shapes: [{index + 1}/{len(valid)}] building {shape.name} (int8)")
        counts[shape.name] = build(teacher, shape, task, cfg.seed, work / shape.name / "model", texts)
        paths[shape.name] = int8(work / shape.name / "model", task, work / shape.name)
    ui.note(f"shapes: timing {len(paths)} int8 models interleaved, {cfg.runs} runs each")
    timing = timer(paths, cfg)
    cells = {c["model"]: c for c in timing["cells"]}
    rows = [_row(s, counts[s.name], paths[s.name], cells[s.name]) for s in valid]
    reference = {**_row(base, counts[TEACHER], paths[TEACHER], cells[TEACHER]), "name": TEACHER}
    return reference, rows, skipped, timing


def _distill_config(row: shapes.Row, base: Shape, cfg: Config) -> DistillConfig:
    """distill's settings for one kept shape."""
    from edgeslim.config import make_config

    hidden, heads, ffn = _widths(Shape(**row["shape"]), base)
    return make_config(
        DistillConfig,
        where=f"shapes: distilling {row['name']}",
        student_layers=row["shape"]["layers"],
        student_hidden=hidden,
        student_heads=heads,
        student_ffn=ffn,
        **cfg.model_dump(include=set(DISTILL_FIELDS)),
        max_steps=cfg.distill_steps,
        eval_every=cfg.distill_steps,
        save_every=max(1, min(200, cfg.distill_steps // 4)),
    )


# Config fields passed through to distill as they are.
DISTILL_FIELDS = (
    "data", "eval", "unlabeled", "unlabeled_size", "train_size", "eval_size",
    "batch_size", "lr", "max_length", "data_dir", "losses", "seed",
)  # fmt: skip


def distill_kept(teacher: Path, chosen: list[shapes.Row], cfg: Config, out: Path, work: Path) -> None:
    """Distill each chosen shape into out/students/NAME (a finished one, from a run killed later,
    is reused), then score its int8 artifact on the dev data; results go into the rows."""
    from edgeslim import evaluation
    from edgeslim.train import distill

    config = models.read_config(teacher)
    task, base = distill.teacher_task(config), shapes.of_config(config)
    settings = [(row, _distill_config(row, base, cfg)) for row in chosen]
    dev = distill.load_data(teacher, settings[0][1], task)[1]  # the dev set distill evaluates on
    for index, (row, dcfg) in enumerate(settings):
        student = out / "students" / row["name"]
        if not (student / "edgeslim-train.json").is_file():
            ui.note(
                f"shapes: [{index + 1}/{len(chosen)}] distilling {row['name']} ({cfg.distill_steps} steps)"
            )
            student.mkdir(parents=True, exist_ok=True)
            distill.train_student(str(teacher), dcfg, student)
        result = evaluation.evaluate(int8(student, task, work / "distilled" / row["name"]), dev)
        metric, value = next(iter(result["metrics"].items()))
        row.update(metric=metric, accuracy=value["value"], accuracy_ci95=value["ci95"], eval_data=dev.name)


def run(src: str, cfg: Config, out: Path, timer: Timer = measure) -> dict[str, Any]:
    """Time the grid of shapes of teacher `src` into `out` (shapes.json, shapes.md, shapes.png,
    edgeslim-shapes.json); with distill_steps, distill the kept shapes and leave the most
    accurate one as a HF model directory in `out`. `timer` is injectable (tests)."""
    from edgeslim.environment import snapshot

    teacher = models.resolve(src)
    with artifacts.scratch("shapes") as work:
        reference, rows, skipped, timing = time_candidates(teacher, cfg, work, timer)
        chosen = shapes.select(rows, cfg.latency_ms, cfg.speedup, cfg.keep, cfg.order)
        if cfg.distill_steps and chosen:
            distill_kept(teacher, chosen, cfg, out, work)
    winner = shapes.best(rows)
    shapes.mark_quality_front(rows)
    if cfg.distill_steps and winner is None:
        for line in shapes.lines(rows, reference, _setting(cfg), _target(cfg)):
            ui.note(line)
        raise BudgetNotMet(_none_kept(reference, cfg))
    if winner is not None:
        _promote(out, winner["name"])
    result = {
        "teacher": {
            "path": str(teacher),
            "sha256": artifacts.sha256_files(models.weight_files(teacher, False)),
        },
        "config": cfg.model_dump(mode="json"),
        "cpu": (timing.get("cpu") or snapshot()["cpu"])["model"],  # type: ignore[index]
        "timing": {k: timing.get(k) for k in ("ep", "settings", "peak_rss_mb")},
        "reference": reference,
        "candidates": rows,
        "skipped": skipped,
        "chosen": winner["name"] if winner else None,
    }
    write_outputs(out, result, cfg)
    artifacts.write_json(out / RECORD, {"type": "shapes", **result, **snapshot()})
    return summarize(result, cfg)


def summarize(result: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The terminal summary; `budget_not_met` when no candidate met the target."""
    rows, reference = result["candidates"], result["reference"]
    kept = [r for r in rows if r["kept"]]
    summary: dict[str, Any] = {
        "candidates": len(rows),
        "skipped": len(result["skipped"]),
        "kept": len(kept),
        "teacher_int8": f"{reference['median_ms']} ms, {reference['size_mb']} MB",
        "pareto": "; ".join(shapes.brief(r) for r in shapes.pareto(kept, shapes.CAPACITY)) or "none",
    }
    if result["chosen"]:
        summary["chosen"] = shapes.brief(next(r for r in rows if r["name"] == result["chosen"]))
    if not kept:
        summary["budget_not_met"] = _none_kept(reference, cfg)
    summary["view"] = "\n".join(shapes.lines(rows, reference, _setting(cfg), _target(cfg)))
    return summary


# The summary's `view` (the teacher, the target and the Pareto sets) is shown as text (steps.present).
DETAIL = ("view",)


def render(summary: dict[str, Any]) -> str:
    """The shapes step's terminal view."""
    return str(summary.get("view", ""))


def _setting(cfg: Config) -> str:
    return f"{cfg.threads} thread(s), batch {cfg.batch}, seq {cfg.seq}, {cfg.runs} interleaved runs"


def _target(cfg: Config) -> str:
    parts = [f"median <= {cfg.latency_ms} ms"] if cfg.latency_ms else []
    return " and ".join(parts + ([f"speedup >= {cfg.speedup}x"] if cfg.speedup else []))


def _none_kept(reference: shapes.Row, cfg: Config) -> str:
    return (
        f"no candidate met {_target(cfg)} (teacher int8: {reference['median_ms']} ms at {cfg.threads} "
        "thread(s)): relax the target or add smaller shapes"
    )


def _promote(out: Path, name: str) -> None:
    """Move the chosen student's files up into `out` (the next step's model); drop the others."""
    for item in (out / "students" / name).iterdir():
        shutil.move(str(item), out / item.name)
    shutil.rmtree(out / "students")


def write_outputs(out: Path, result: dict[str, Any], cfg: Config) -> None:
    """shapes.json, shapes.md and shapes.png (each written under a temporary name, then renamed)."""
    artifacts.write_json(out / "shapes.json", result)
    (out / ".shapes.md.tmp").write_text(shapes.markdown(result, _setting(cfg), _target(cfg)))
    os.replace(out / ".shapes.md.tmp", out / "shapes.md")
    title = f"t{cfg.threads} b{cfg.batch} s{cfg.seq}"
    teacher_ms = result["reference"]["median_ms"]
    limit = min(cfg.latency_ms or teacher_ms, teacher_ms / (cfg.speedup or 1.0))
    shapes.plot(result, title, limit, out / ".shapes.png.tmp")
    os.replace(out / ".shapes.png.tmp", out / "shapes.png")


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    return None if text is None else positive_list(text, option, float)


def _ints(text: str | None, option: str) -> tuple[int, ...] | None:
    return None if text is None else positive_list(text, option)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def _grid(name: str) -> Any:
    """A grid axis: comma-separated values."""
    return field_option(Config, name, help=f"{Config.model_fields[name].description} Comma-separated.")


def command(
    teacher: Annotated[str, typer.Argument(help="Teacher: packaged name (minilm) or HF directory.")],
    output: Output,
    layers: Annotated[str | None, _grid("layers")] = None,
    hidden: Annotated[str | None, _grid("hidden")] = None,
    heads: Annotated[str | None, _grid("heads")] = None,
    head_dim: Annotated[str | None, _grid("head_dim")] = None,
    ffn: Annotated[str | None, _grid("ffn")] = None,
    ffn_ratio: Annotated[str | None, _grid("ffn_ratio")] = None,
    threads: Annotated[int | None, _option("threads")] = None,
    seq: Annotated[int | None, _option("seq")] = None,
    batch: Annotated[int | None, _option("batch")] = None,
    latency_ms: Annotated[float | None, _option("latency_ms")] = None,
    speedup: Annotated[float | None, _option("speedup")] = None,
    runs: Annotated[int | None, _option("runs")] = None,
    warmup: Annotated[int | None, _option("warmup")] = None,
    keep: Annotated[int | None, _option("keep")] = None,
    order: Annotated[str | None, _option("order")] = None,
    distill_steps: Annotated[int | None, _option("distill_steps")] = None,
    trim_vocab: Annotated[str | None, _option("trim_vocab")] = None,
    seed: Annotated[int | None, _option("seed")] = None,
    data: Annotated[str | None, _option("data")] = None,
    eval: Annotated[str | None, _option("eval", "--eval")] = None,
    unlabeled: Annotated[str | None, _option("unlabeled")] = None,
    unlabeled_size: Annotated[int | None, _option("unlabeled_size")] = None,
    train_size: Annotated[int | None, _option("train_size")] = None,
    eval_size: Annotated[int | None, _option("eval_size")] = None,
    batch_size: Annotated[int | None, _option("batch_size")] = None,
    lr: Annotated[float | None, _option("lr")] = None,
    max_length: Annotated[int | None, _option("max_length")] = None,
    data_dir: Annotated[Path | None, _option("data_dir")] = None,
    kl: Kl = None,
    soft_ce: SoftCe = None,
    nll: Nll = None,
    min_confidence: MinConfidence = None,
    alpha: Alpha = None,
    hidden_loss: Annotated[float | None, field_option(Weights, "hidden", "--hidden-loss")] = None,
    attention: Attention = None,
    cosine: Cosine = None,
    mse: Mse = None,
    temperature: Temperature = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Pick a student shape by measurement: time candidate shapes as int8 here, keep those under a
    latency target, optionally distill them; print the Pareto set."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        layers=_ints(layers, "--layers"),
        hidden=_ints(hidden, "--hidden"),
        heads=_ints(heads, "--heads"),
        head_dim=_ints(head_dim, "--head-dim"),
        ffn=_ints(ffn, "--ffn"),
        ffn_ratio=_floats(ffn_ratio, "--ffn-ratio"),
        threads=threads,
        seq=seq,
        batch=batch,
        latency_ms=latency_ms,
        speedup=speedup,
        runs=runs,
        warmup=warmup,
        keep=keep,
        order=order,
        distill_steps=distill_steps,
        trim_vocab=trim_vocab,
        seed=seed,
        data=data,
        eval=eval,
        unlabeled=unlabeled,
        unlabeled_size=unlabeled_size,
        train_size=train_size,
        eval_size=eval_size,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        data_dir=data_dir,
        losses=losses(
            kl=kl,
            soft_ce=soft_ce,
            nll=nll,
            min_confidence=min_confidence,
            alpha=alpha,
            hidden=hidden_loss,
            attention=attention,
            cosine=cosine,
            mse=mse,
            temperature=temperature,
        ),
    )
    run_single(teacher, cfg, output, force, dry_run)
