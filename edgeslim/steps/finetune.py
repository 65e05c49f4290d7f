"""finetune: train a task head (and the encoder) on labelled data; output a HF directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field

from edgeslim import artifacts, models
from edgeslim.flags import DryRun, Force, Output
from edgeslim.options import (
    BatchSize,
    Data,
    DataDir,
    Epochs,
    Eval,
    EvalEvery,
    EvalSize,
    GradAccum,
    LabelColumn,
    Lr,
    MaxLength,
    MaxSteps,
    PairColumn,
    Patience,
    Precision,
    SaveEvery,
    Seed,
    TextColumn,
    TrainSize,
    field_option,
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
    task: Annotated[str | None, field_option(Config, "task")] = None,
    data: Data = None,
    eval: Eval = None,
    text_column: TextColumn = None,
    pair_column: PairColumn = None,
    label_column: LabelColumn = None,
    data_dir: DataDir = None,
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
    """Fine-tune a model on labelled data (resumable; early stopping; best checkpoint kept)."""
    from edgeslim.config import make_config
    from edgeslim.steps import run_single

    cfg = make_config(
        Config,
        task=task,
        data=data,
        eval=eval,
        text_column=text_column,
        pair_column=pair_column,
        label_column=label_column,
        data_dir=data_dir,
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
    run_single(model, cfg, output, force, dry_run)
