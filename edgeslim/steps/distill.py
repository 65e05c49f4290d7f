"""distill: train a smaller student from a fine-tuned teacher (logits, pseudo-labels, hidden
states, attention), on labelled and unlabeled text; output a HF directory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field

from edgeslim import artifacts, augment, data, models
from edgeslim.augment import Augment
from edgeslim.errors import InputError
from edgeslim.options import (
    BatchSize,
    Epochs,
    EvalEvery,
    EvalSize,
    Force,
    Lr,
    MaxLength,
    MaxSteps,
    Output,
    SaveEvery,
    Seed,
    TrainSize,
)
from edgeslim.steps.finetune import TrainConfig, fingerprint, finish


class Weights(BaseModel):
    """Loss terms and their weights (0 switches a term off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kl: float = Field(1.0, ge=0, description="KL(teacher||student) on T-softened logits, x T^2.")
    soft_ce: float = Field(0.0, ge=0, description="Cross-entropy against the teacher's soft labels.")
    nll: float = Field(0.0, ge=0, description="NLL of the teacher's hard labels (pseudo-labels).")
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="Keep pseudo-labels with teacher confidence >= this."
    )
    alpha: float = Field(0.0, ge=0, description="Task loss on gold labels (labelled rows only).")
    hidden: float = Field(
        0.0,
        ge=0,
        description="Hidden-state MSE per mapped layer; a narrower student's states go through a learned "
        "Linear(student -> teacher hidden) per layer, trained with it and not saved.",
    )
    attention: float = Field(
        0.0,
        ge=0,
        description="Attention-map KL per mapped layer; when the head counts differ (narrower or pruned "
        "student) the maps are averaged over heads first.",
    )
    cosine: float = Field(
        1.0, ge=0, description="Embedding teachers: 1 - cosine between pooled student and teacher embeddings."
    )
    mse: float = Field(0.0, ge=0, description="Embedding teachers: MSE between pooled embeddings.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature for kl and soft_ce.")


class Config(TrainConfig):
    """distill settings: the student, the unlabeled text, the loss weights."""

    type: Literal["distill"] = "distill"
    student_layers: int | None = Field(None, gt=0, description="Keep this many teacher layers.")
    init: str = Field("every-other", description="every-other, first-k, last-k, or a layer list like 0,2,4.")
    student_hidden: int | None = Field(
        None,
        gt=0,
        description="Student hidden size (<= the teacher's, divisible by the heads; default the teacher's): "
        "the teacher's most active channels are copied.",
    )
    student_heads: int | None = Field(
        None, gt=0, description="Attention heads per student layer (default the teacher's)."
    )
    student_ffn: int | None = Field(None, gt=0, description="Student FFN size (default the teacher's).")
    student: Path | None = Field(None, description="A student model directory instead (same tokenizer).")
    prune_heads: float = Field(
        0.0, ge=0, lt=1, description="Remove this fraction of each student layer's heads while distilling."
    )
    prune_ffn: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Remove this fraction of each student layer's FFN neurons while distilling.",
    )
    prune_at: float = Field(
        0.5, gt=0, le=1, description="Pruning is done by this fraction of the run (its last event)."
    )
    prune_events: int = Field(
        1, ge=1, description="Prune in N events up to prune_at, a cubic share by each (most early)."
    )
    unlabeled: str | None = Field(None, description="Unlabeled text for pseudo-labels (e.g. wikitext2).")
    unlabeled_size: int | None = Field(None, gt=0, description="Use the first N unlabeled texts.")
    augment: Augment | None = Field(
        None, description="Add seeded edits of in-domain sentences to the unlabeled text (teacher-scored)."
    )
    losses: Weights = Field(default_factory=Weights, description="Loss terms and weights.")


def teacher_task(config: dict[str, Any]) -> str:
    """The teacher's head: sequence-classification, regression or feature-extraction (an
    embedding model); token-classification teachers are refused."""
    task = models.head_task(config)
    if task not in ("sequence-classification", "regression", "feature-extraction"):
        heads = " ".join(config.get("architectures") or []) or "none"
        raise InputError(
            f"the teacher's head is {heads}: distill takes a sequence-classification, regression "
            "or embedding (feature-extraction) teacher"
        )
    return task


def _unlabeled(cfg: Config, train: data.Examples, notes: dict[str, Any]) -> list[str]:
    """The --unlabeled texts (first --unlabeled-size of them), then augment's edits of the
    `train` sentences (or of its own source), recorded in `notes`; or none."""
    texts = []
    if cfg.unlabeled:
        unlabeled = data.load(cfg.unlabeled, None, None, None, cfg.data_dir)
        texts = unlabeled.head(cfg.unlabeled_size or len(unlabeled)).texts
    if cfg.augment is not None:
        source = train
        if cfg.augment.source is not None:
            source = data.load(cfg.augment.source, None, None, None, cfg.data_dir)
        source = source.head(cfg.augment.size or len(source))
        sentences = source.texts + (source.pairs or [])
        made = augment.augment(sentences, cfg.augment)
        notes["augment"] = augment.summary(sentences, made, cfg.augment)
        texts += [text for _, text in made]
    return texts


def _embedding_data(cfg: Config, notes: dict[str, Any]) -> tuple[data.Examples, data.Examples]:
    """Embedding distillation: every sentence of --data (both sides of pairs) plus the
    unlabeled text, unlabeled; the dev set must be scored sentence pairs (e.g. stsb:dev)."""
    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    if cfg.eval is None:  # the dev split of --data, or a held-out part of it
        source, dev, _ = data.train_and_dev(cfg.data, None, columns, cfg.data_dir, (None, cfg.eval_size))
    else:
        source = data.load(cfg.data, cfg.text_column, cfg.pair_column, None, cfg.data_dir)
        dev = data.load_labelled(cfg.eval, *columns, cfg.data_dir, cfg.eval_size)
    texts = (source.texts + (source.pairs or []))[: cfg.train_size or None]
    texts += _unlabeled(cfg, data.Examples(source.name, list(texts)), notes)
    if not dev.pairs:
        raise InputError(
            f"an embedding teacher is scored by the Spearman correlation of pair similarities: "
            f"--eval needs scored sentence pairs (e.g. stsb:dev), and {dev.name} has no pairs"
        )
    return data.Examples(source.name, texts), dev


def _same_tokenizer(teacher: Path, student: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "vocab.json"):
        a, b = teacher / name, student / name
        if a.exists() or b.exists():
            if not (a.exists() and b.exists() and a.read_bytes() == b.read_bytes()):
                raise InputError(
                    f"teacher and student tokenizers differ ({name}): the student must share the "
                    "teacher's vocabulary; build it with --student-layers, or trim the vocabulary "
                    "of both with 'edgeslim simplify --trim-vocab'"
                )
            return


def _labels(examples: data.Examples, teacher: Path, task: str) -> list[Any]:
    """Gold labels as the teacher's class ids (or floats for regression)."""
    from edgeslim import evaluation

    if task == "regression":
        return list(data.scores(examples))
    return [int(x) for x in evaluation.label_ids(examples, teacher)]


def _data(
    teacher: Path, cfg: Config, task: str, notes: dict[str, Any] | None = None
) -> tuple[data.Examples, data.Examples, list[Any], list[Any]]:
    """(train, dev, train labels, dev labels) for distilling `teacher` (labels as its ids;
    -1 marks unlabeled rows, scored by the teacher terms only); what augment added goes to `notes`."""
    notes = {} if notes is None else notes
    if task == "feature-extraction":
        train, dev = _embedding_data(cfg, notes)
        return train, dev, [-1] * len(train), list(data.scores(dev))
    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    sizes = (cfg.train_size, cfg.eval_size)
    train, dev, _ = data.train_and_dev(cfg.data, cfg.eval, columns, cfg.data_dir, sizes)
    train_labels, dev_labels = _labels(train, teacher, task), _labels(dev, teacher, task)
    if cfg.unlabeled or cfg.augment:
        if train.pairs:
            raise InputError("--unlabeled text and augment work with single-sentence tasks only")
        extra = _unlabeled(cfg, train, notes)
        train = data.Examples(train.name, train.texts + extra)
        train_labels += [-1] * len(extra)
    return train, dev, train_labels, dev_labels


IMPORTANCE_BATCHES = 8  # training batches the teacher reads to rank channels, heads and neurons


def _student(
    teacher: Any, teacher_dir: Path, cfg: Config, task: str, batches: Callable[[int], list[dict[str, Any]]]
) -> tuple[Any, list[int], Any]:
    """(student, the teacher layer each student layer imitates, the teacher hidden channels a
    narrowed student was copied from or None)."""
    from edgeslim import distillation, simplify, students

    layers = (
        teacher.config.num_hidden_layers
        if hasattr(teacher.config, "num_hidden_layers")
        else (teacher.config.n_layers)
    )
    if cfg.student is not None:
        _same_tokenizer(teacher_dir, cfg.student)
        student = models.load(models.resolve(str(cfg.student)), task)
        simplify.tie_shared_(student)
        s_layers = getattr(student.config, "num_hidden_layers", None) or student.config.n_layers
        return student, distillation.uniform_map(s_layers, layers), None
    mapping = students.layer_map(layers, cfg.student_layers, cfg.init)
    reduced = students.reduce_layers(teacher, mapping)
    width = students.target_width(
        teacher.config.to_dict(), cfg.student_hidden, cfg.student_heads, cfg.student_ffn
    )
    if width is None:
        return reduced, mapping, None
    importance = students.activation_importance(teacher, batches(0)[:IMPORTANCE_BATCHES])
    plan = students.width_plan(reduced, width, importance, mapping)
    return students.narrow(reduced, width, plan), mapping, plan["hidden"]


def _check_student(cfg: Config, config: dict[str, Any], task: str) -> None:
    """The student options, before the data and the teacher are loaded."""
    from edgeslim import students

    if (
        cfg.student is None
        and cfg.student_layers is None
        and cfg.init in ("every-other", "first-k", "last-k")
    ):
        raise InputError("choose the student: --student-layers K (with --init) or --student DIR")
    narrowed = (cfg.student_hidden, cfg.student_heads, cfg.student_ffn) != (None, None, None)
    if cfg.student is not None:  # a bad student fails here, not after the teacher and data load
        if narrowed:
            raise InputError(
                "--student-hidden/--student-heads/--student-ffn shape a student built from the "
                "teacher: drop them with --student DIR"
            )
        models.read_config(models.resolve(str(cfg.student)))
    width = students.target_width(config, cfg.student_hidden, cfg.student_heads, cfg.student_ffn)
    if width is not None and task == "feature-extraction":
        raise InputError(
            "an embedding teacher's student keeps the teacher's hidden size (their embeddings are "
            "compared directly): drop --student-hidden/--student-heads/--student-ffn"
        )
    if cfg.prune_heads or cfg.prune_ffn:
        if cfg.patience is not None:
            raise InputError(
                "--patience could stop before pruning is done: drop it with --prune-heads/--prune-ffn"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise InputError("pruning while distilling runs in one process: launch it without DDP")


def _pruner(student: Any, cfg: Config, hook_factory: Callable[[Any], Any] | None) -> Any:
    """The trainer hook: the caller's (prune/simplify recovery), or pruning while distilling."""
    from edgeslim import pruning

    if not (cfg.prune_heads or cfg.prune_ffn):
        return hook_factory(student) if hook_factory else None
    if hook_factory is not None:
        raise InputError("pruning while distilling does not combine with the calling step's own hook")
    return pruning.Pruner(student, cfg.prune_heads, cfg.prune_ffn, cfg.prune_at, cfg.prune_events)


def run(
    src: str,
    cfg: Config,
    out: Path,
    hook_factory: Callable[[Any], Any] | None = None,
    owner: str = "",
) -> dict[str, Any]:
    """Distill teacher `src` into a student written as a HF directory to `out`.

    `hook_factory(student)` makes a trainer hook (prune uses it to sparsify while distilling);
    `owner` identifies the calling step's run (prune/simplify recovery), so that its checkpoint
    resumes only that run."""
    import torch

    from edgeslim import distillation, students, trainer, training

    path = models.resolve(src)
    config = models.read_config(path)
    task = teacher_task(config)
    _check_student(cfg, config, task)
    notes: dict[str, Any] = {}
    train, dev, train_labels, dev_labels = _data(path, cfg, task, notes)
    torch.manual_seed(cfg.seed)
    teacher = models.load(path, task).eval()
    batches = training.batch_maker(path, train, train_labels, task, cfg)
    student, mapping, kept = _student(teacher, path, cfg, task, batches)
    wrapper = distillation.Student(student.train(), teacher.config.hidden_size, len(mapping), kept)
    pooling = models.default_pooling(path)
    loss_fn = distillation.make_loss(teacher, cfg.losses, mapping, task, pooling)
    evaluate = (
        training.similarity_metric(path, dev, dev_labels, pooling, cfg)
        if task == "feature-extraction"
        else training.dev_metric(path, dev, dev_labels, task, cfg)
    )
    stats: dict[str, Any] = {"teacher_dev": evaluate(teacher), "layer_map": mapping, "eval_data": dev.name}
    stats["student_initial"] = students.shape(student)
    stats.update(notes, unlabeled_rows=train_labels.count(-1))
    if task == "sequence-classification":
        stats["pseudo_labels"] = distillation.pseudo_label_stats(
            teacher, training.batch_maker(path, dev, dev_labels, task, cfg)(0), cfg.losses.min_confidence
        )
    settings = training.loop_settings(cfg)
    hook = _pruner(student, cfg, hook_factory)
    run_id = fingerprint(src, cfg) + owner + (json.dumps(hook.describe(), sort_keys=True) if hook else "")
    result = trainer.train(
        wrapper, loss_fn, batches, evaluate, training.METRIC[task], out, settings, run_id, hook
    )
    stats["student"] = students.shape(student)  # after any pruning: the shape written
    if hook is not None:
        stats["pruning" if cfg.prune_heads or cfg.prune_ffn else "sparsity"] = hook.report()
    if not artifacts.is_main_process():  # other ranks of a distributed run write nothing
        return {"rank": result["ranks"]}
    finish(
        out,
        path,
        {"type": "distill", "teacher": str(path), "config": cfg.model_dump(mode="json"), **stats, **result},
    )
    _pooling_width(out, stats["student"]["hidden"])
    return {
        "teacher_dev": stats["teacher_dev"],
        "student_best": result["best"],
        "layer_map": mapping,
        "student": stats["student"],
        **stats.get("pseudo_labels", {}),
        **({"augmented": stats["augment"]["added"]} if "augment" in stats else {}),
        **({"prune_events": stats["pruning"]["events"]} if "pruning" in stats else {}),
        **({"sparsity": stats["sparsity"]} if "sparsity" in stats else {}),
    }


def _pooling_width(out: Path, hidden: int) -> None:
    """The copied sentence-transformers pooling config names the student's width, not the teacher's."""
    pooling = out / "1_Pooling" / "config.json"
    if pooling.is_file():
        config = models.read_json(pooling)
        if config.get("word_embedding_dimension", hidden) != hidden:
            artifacts.write_json(pooling, {**config, "word_embedding_dimension": hidden})


def recover(
    student: Path,
    teacher: Path,
    cfg: Any,
    out: Path,
    hook_factory: Callable[[Any], Any] | None = None,
    owner: str = "",
) -> dict[str, Any]:
    """Distill `teacher` into the transformed `student` directory (KL + hidden states) and
    leave the result in `out` (used by prune and simplify); `student` is removed after.

    Resumable: the checkpoint lives in `out`/recovery (inside the step's kept `.NAME.partial`),
    written about four times per run; `owner` (the calling step's fingerprint) ties it to that
    step's model and settings."""
    import shutil

    work = out / "recovery"
    work.mkdir(exist_ok=True)  # a rerun after a kill finds its checkpoint here
    summary = run(str(teacher), _recovery_config(student, cfg), work, hook_factory, owner)
    for item in work.iterdir():
        shutil.move(str(item), out / item.name)
    work.rmdir()
    shutil.rmtree(student)
    # the student was a temporary folder of the calling step: record what it was, not where
    record = out / "edgeslim-train.json"
    if record.is_file():
        data = json.loads(record.read_text())
        data.get("config", {})["student"] = "the calling step's transformed model"
        artifacts.write_json(record, data)
    return summary


def _recovery_config(student: Path, cfg: Any) -> Config:
    """The distill settings of prune/simplify recovery (KL + hidden states) from their `cfg`."""
    return Config(
        student=student,
        data=cfg.data,
        eval=cfg.eval,
        max_steps=cfg.recover_steps,
        eval_every=cfg.recover_steps,
        save_every=max(1, min(100, cfg.recover_steps // 4)),
        max_length=cfg.max_length,
        seed=cfg.seed,
        lr=1e-4,
        losses=Weights(kl=1.0, hidden=1.0),
    )


def check_recovery(cfg: Any) -> None:
    """Before prune/simplify change anything: the --recover-with teacher is a loadable model
    (config, head, tokenizer, weights) and --data/--eval load with labels it knows."""
    path = models.resolve(str(cfg.recover_with))
    config = models.read_config(path)
    task = teacher_task(config)
    models.check_tokenizer(path, config)
    models.weight_files(path, allow_pickle=False)
    _data(path, _recovery_config(path, cfg), task)


def command(
    teacher: Annotated[str, typer.Option("--teacher", help="Fine-tuned teacher directory.")],
    output: Output,
    student_layers: Annotated[int | None, typer.Option(help="Keep K teacher layers.")] = None,
    init: Annotated[str, typer.Option(help="every-other, first-k, last-k or 0,2,4.")] = "every-other",
    student_hidden: Annotated[
        int | None, typer.Option(help="Student hidden size (<= the teacher's; default the teacher's).")
    ] = None,
    student_heads: Annotated[int | None, typer.Option(help="Student attention heads per layer.")] = None,
    student_ffn: Annotated[int | None, typer.Option(help="Student FFN (intermediate) size.")] = None,
    student: Annotated[Path | None, typer.Option(help="Student model directory instead.")] = None,
    prune_heads: Annotated[float, typer.Option(help="Fraction of heads to remove while distilling.")] = 0.0,
    prune_ffn: Annotated[
        float, typer.Option(help="Fraction of FFN neurons to remove while distilling.")
    ] = 0.0,
    prune_at: Annotated[float, typer.Option(help="Pruning is done by this fraction of the run.")] = 0.5,
    prune_events: Annotated[int, typer.Option(help="Prune in N events (cubic schedule).")] = 1,
    data_spec: Annotated[str, typer.Option("--data", help="Labelled training data.")] = "sst2:train",
    unlabeled: Annotated[str | None, typer.Option(help="Unlabeled text (e.g. wikitext2).")] = None,
    eval_data: Annotated[
        str | None, typer.Option("--eval", help="Dev data (default: --data's dev split or a held-out 10%).")
    ] = None,
    kl: Annotated[float, typer.Option(help="Weight of soft-label KL.")] = 1.0,
    soft_ce: Annotated[float, typer.Option(help="Weight of soft cross-entropy.")] = 0.0,
    nll: Annotated[float, typer.Option(help="Weight of teacher hard-label NLL.")] = 0.0,
    min_confidence: Annotated[float, typer.Option(help="Pseudo-label confidence filter.")] = 0.0,
    alpha: Annotated[float, typer.Option(help="Weight of the gold-label task loss.")] = 0.0,
    hidden: Annotated[float, typer.Option(help="Weight of hidden-state MSE.")] = 0.0,
    attention: Annotated[float, typer.Option(help="Weight of attention KL.")] = 0.0,
    temperature: Annotated[float, typer.Option(help="Softmax temperature.")] = 2.0,
    cosine: Annotated[float, typer.Option(help="Embedding teachers: weight of 1 - cosine.")] = 1.0,
    mse: Annotated[float, typer.Option(help="Embedding teachers: weight of embedding MSE.")] = 0.0,
    max_steps: MaxSteps = None,
    epochs: Epochs = 1.0,
    batch_size: BatchSize = 32,
    lr: Lr = 5e-5,
    max_length: MaxLength = 128,
    seed: Seed = 0,
    eval_every: EvalEvery = 200,
    save_every: SaveEvery = 200,
    train_size: TrainSize = None,
    eval_size: EvalSize = None,
    unlabeled_size: Annotated[int | None, typer.Option(help="First N unlabeled texts.")] = None,
    augment_copies: Annotated[
        int | None,
        typer.Option(help="Add N edited copies of each training sentence to the unlabeled text."),
    ] = None,
    augment_size: Annotated[int | None, typer.Option(help="Augment the first N sentences only.")] = None,
    force: Force = False,
) -> None:
    """Distill a fine-tuned teacher into a smaller student (resumable; best checkpoint kept)."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    if augment_size is not None and augment_copies is None:
        raise InputError("--augment-size needs --augment-copies N")
    weights = make_config(
        Weights,
        kl=kl,
        soft_ce=soft_ce,
        nll=nll,
        min_confidence=min_confidence,
        alpha=alpha,
        hidden=hidden,
        attention=attention,
        temperature=temperature,
        cosine=cosine,
        mse=mse,
    )
    cfg = make_config(
        Config,
        student_layers=student_layers,
        init=init,
        student_hidden=student_hidden,
        student_heads=student_heads,
        student_ffn=student_ffn,
        student=student,
        prune_heads=prune_heads,
        prune_ffn=prune_ffn,
        prune_at=prune_at,
        prune_events=prune_events,
        data=data_spec,
        unlabeled=unlabeled,
        eval=eval_data,
        losses=weights,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        seed=seed,
        eval_every=eval_every,
        save_every=save_every,
        train_size=train_size,
        eval_size=eval_size,
        unlabeled_size=unlabeled_size,
        augment=None if augment_copies is None else {"copies": augment_copies, "size": augment_size},
    )
    run_single(teacher, cfg, output, force)
