"""distill: train a smaller student from a fine-tuned teacher (logits, pseudo-labels, hidden
states, attention), on labelled and unlabeled text; output a HF directory. The run itself is
train/distill.py's; its Config is train/config.py's DistillConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeslim.augment import Augment
from edgeslim.errors import InputError
from edgeslim.flags import DryRun, Force, Output
from edgeslim.options import (
    Alpha,
    Attention,
    BatchSize,
    Cosine,
    Data,
    DataDir,
    Epochs,
    Eval,
    EvalEvery,
    EvalSize,
    GradAccum,
    Hidden,
    Kl,
    LabelColumn,
    Lr,
    MaxLength,
    MaxSteps,
    MinConfidence,
    Mse,
    Nll,
    PairColumn,
    Patience,
    Precision,
    SaveEvery,
    Seed,
    SoftCe,
    Temperature,
    TextColumn,
    TrainSize,
    field_option,
    losses,
)
from edgeslim.train.config import DistillConfig
from edgeslim.train.config import Weights as Weights  # Config's `losses`, for configs built in code

Config = DistillConfig  # the training layer takes it, so it is defined there


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Distill teacher `src` into a student written as a HF directory to `out`."""
    from edgeslim.train import distill

    return distill.train_student(src, cfg, out)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def _augment(name: str, **kwargs: Any) -> Any:
    return field_option(Augment, name, f"--augment-{name.replace('_', '-')}", **kwargs)


def command(
    teacher: Annotated[str, typer.Option("--teacher", help="Fine-tuned teacher directory.")],
    output: Output,
    student_layers: Annotated[int | None, _option("student_layers")] = None,
    init: Annotated[str | None, _option("init")] = None,
    student_hidden: Annotated[int | None, _option("student_hidden")] = None,
    student_heads: Annotated[int | None, _option("student_heads")] = None,
    student_ffn: Annotated[int | None, _option("student_ffn")] = None,
    student: Annotated[Path | None, _option("student")] = None,
    prune_heads: Annotated[float | None, _option("prune_heads")] = None,
    prune_ffn: Annotated[float | None, _option("prune_ffn")] = None,
    prune_at: Annotated[float | None, _option("prune_at")] = None,
    prune_events: Annotated[int | None, _option("prune_events")] = None,
    data: Data = None,
    eval: Eval = None,
    text_column: TextColumn = None,
    pair_column: PairColumn = None,
    label_column: LabelColumn = None,
    data_dir: DataDir = None,
    unlabeled: Annotated[str | None, _option("unlabeled")] = None,
    unlabeled_size: Annotated[int | None, _option("unlabeled_size")] = None,
    augment_copies: Annotated[
        int | None,
        _augment(
            "copies",
            help="Add N edited copies of each training sentence to the unlabeled text (no augmentation "
            "without it).",
            default=False,
        ),
    ] = None,
    augment_source: Annotated[str | None, _augment("source")] = None,
    augment_size: Annotated[int | None, _augment("size")] = None,
    augment_word_dropout: Annotated[float | None, _augment("word_dropout")] = None,
    augment_replace: Annotated[float | None, _augment("replace")] = None,
    augment_span_shuffle: Annotated[float | None, _augment("span_shuffle")] = None,
    augment_seed: Annotated[int | None, _augment("seed")] = None,
    kl: Kl = None,
    soft_ce: SoftCe = None,
    nll: Nll = None,
    min_confidence: MinConfidence = None,
    alpha: Alpha = None,
    hidden: Hidden = None,
    attention: Attention = None,
    cosine: Cosine = None,
    mse: Mse = None,
    temperature: Temperature = None,
    train_size: TrainSize = None,
    eval_size: EvalSize = None,
    max_steps: MaxSteps = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    grad_accum: GradAccum = None,
    lr: Lr = None,
    max_length: MaxLength = None,
    seed: Seed = None,
    eval_every: EvalEvery = None,
    save_every: SaveEvery = None,
    patience: Patience = None,
    precision: Precision = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Distill a fine-tuned teacher into a smaller student (resumable; best checkpoint kept)."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    augment: dict[str, Any] = {
        "source": augment_source,
        "size": augment_size,
        "word_dropout": augment_word_dropout,
        "replace": augment_replace,
        "span_shuffle": augment_span_shuffle,
        "seed": augment_seed,
    }
    augment = {k: v for k, v in augment.items() if v is not None}
    if augment and augment_copies is None:
        raise InputError(f"--augment-{next(iter(augment)).replace('_', '-')} needs --augment-copies N")
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
        data=data,
        eval=eval,
        text_column=text_column,
        pair_column=pair_column,
        label_column=label_column,
        data_dir=data_dir,
        unlabeled=unlabeled,
        unlabeled_size=unlabeled_size,
        augment=None if augment_copies is None else {"copies": augment_copies, **augment},
        losses=losses(
            kl=kl,
            soft_ce=soft_ce,
            nll=nll,
            min_confidence=min_confidence,
            alpha=alpha,
            hidden=hidden,
            attention=attention,
            cosine=cosine,
            mse=mse,
            temperature=temperature,
        ),
        train_size=train_size,
        eval_size=eval_size,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        max_length=max_length,
        seed=seed,
        eval_every=eval_every,
        save_every=save_every,
        patience=patience,
        precision=precision,
    )
    run_single(teacher, cfg, output, force, dry_run)
