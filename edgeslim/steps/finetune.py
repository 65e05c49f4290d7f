"""finetune: train a task head (and the encoder) on labelled data; output a HF directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field

from edgeslim import artifacts, models
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
from edgeslim.train.config import TrainConfig, TrainTask, fingerprint, finish


class Config(TrainConfig):
    """finetune settings."""

    type: Literal["finetune"] = "finetune"
    task: TrainTask = Field("sequence-classification", description="Head to train.")


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Fine-tune `src` (packaged name or HF directory) into the HF directory `out`."""
    import torch

    from edgeslim.train import task

    path = models.resolve(src)
    train, dev, names = task.load_task_data(cfg, cfg.task)
    torch.manual_seed(cfg.seed)  # the new head's initialisation is part of the run
    model = models.load(path, cfg.task, labels=names or None).train()
    models.tie_shared_(model)
    result = task.fit(
        model, path, train, dev, names, cfg, cfg.task, task.task_loss, out, fingerprint(src, cfg)
    )
    if not artifacts.is_main_process():  # other ranks of a distributed run write nothing
        return {"rank": result["ranks"]}
    finish(
        out,
        path,
        {
            "type": "finetune",
            "source": str(path),
            "config": cfg.model_dump(mode="json"),
            "eval_data": dev.name,  # what the dev set was, also when chosen by default
            **result,
        },
    )
    return {"best": result["best"], "steps": result["steps"]}


def command(
    model: Annotated[str, typer.Argument(help="Packaged name (minilm) or HF directory.")],
    output: Output,
    task: Annotated[
        str, typer.Option(help="sequence-classification, regression or token-classification.")
    ] = ("sequence-classification"),
    data: Annotated[str, typer.Option(help="Training data.")] = "sst2:train",
    eval_data: Annotated[
        str | None, typer.Option("--eval", help="Dev data (default: --data's dev split or a held-out 10%).")
    ] = None,
    max_steps: MaxSteps = None,
    epochs: Epochs = 1.0,
    batch_size: BatchSize = 32,
    lr: Lr = 5e-5,
    max_length: MaxLength = 128,
    seed: Seed = 0,
    eval_every: EvalEvery = 200,
    save_every: SaveEvery = 200,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience (evaluations).")] = None,
    train_size: TrainSize = None,
    eval_size: EvalSize = None,
    text_column: Annotated[str | None, typer.Option(help="Text column.")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Pair column.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column.")] = None,
    force: Force = False,
) -> None:
    """Fine-tune a model on labelled data (resumable; early stopping; best checkpoint kept)."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        task=task,
        data=data,
        eval=eval_data,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        seed=seed,
        eval_every=eval_every,
        save_every=save_every,
        patience=patience,
        train_size=train_size,
        eval_size=eval_size,
        text_column=text_column,
        pair_column=pair_column,
        label_column=label_column,
    )
    run_single(model, cfg, output, force)
