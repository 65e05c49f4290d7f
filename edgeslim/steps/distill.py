"""distill: train a smaller student from a fine-tuned teacher (logits, pseudo-labels, hidden
states, attention), on labelled and unlabeled text; output a HF directory. The run itself is
train/distill.py's; its Config is train/config.py's DistillConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
from edgeslim.train.config import DistillConfig, Weights

Config = DistillConfig  # the training layer takes it, so it is defined there


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Distill teacher `src` into a student written as a HF directory to `out`."""
    from edgeslim.train import distill

    return distill.train_student(src, cfg, out)


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
