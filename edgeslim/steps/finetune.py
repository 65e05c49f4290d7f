"""finetune: train a task head (and the encoder) on labelled data; output a HF directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from pydantic import Field

from edgeslim import artifacts, models
from edgeslim.config import StepConfig
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

TrainTask = Literal["sequence-classification", "regression", "token-classification"]


class TrainConfig(StepConfig):
    """Flags shared by finetune and distill."""

    takes_model: ClassVar[bool] = True
    produces_model: ClassVar[bool] = True
    resumable: ClassVar[bool] = True
    data: str = Field("sst2:train", description="Labelled training data (built-in name or file).")
    eval: str | None = Field(
        None,
        description="Labelled dev data for early stopping and the best checkpoint; default: the "
        "training set's own dev split (sst2:train -> sst2:dev), else a seeded held-out 10% of --data.",
    )
    text_column: str | None = Field(None, description="Text column of user files.")
    pair_column: str | None = Field(None, description="Second-text column of user files.")
    label_column: str | None = Field(None, description="Label column of user files.")
    data_dir: Path | None = Field(None, description="Where built-in datasets live.")
    train_size: int | None = Field(None, gt=0, description="Use the first N training examples.")
    eval_size: int | None = Field(None, gt=0, description="Use the first N dev examples.")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps (overrides epochs).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data.")
    batch_size: int = Field(32, gt=0, description="Examples per step (per process).")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (linear warmup and decay).")
    max_length: int = Field(128, gt=1, description="Truncate inputs to this many tokens.")
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    eval_every: int = Field(200, gt=0, description="Evaluate (and log) every N steps.")
    save_every: int = Field(200, gt=0, description="Checkpoint every N steps (for resume).")
    patience: int | None = Field(None, gt=0, description="Stop after N evaluations without improvement.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 only where the hardware has it.")


class Config(TrainConfig):
    """finetune settings."""

    type: Literal["finetune"] = "finetune"
    task: TrainTask = Field("sequence-classification", description="Head to train.")


def fingerprint(src: str, cfg: StepConfig) -> str:
    """Identifies a run, so a checkpoint is resumed only by the same command."""
    return hashlib.sha256(
        json.dumps([str(src), cfg.model_dump(mode="json")], sort_keys=True).encode()
    ).hexdigest()


def _label_order(label: str) -> tuple[bool, int, str]:
    """Integer labels in numeric order (0, 1, 2, ... 10), then the rest alphabetically."""
    numeric = label.lstrip("-").isdigit()
    return (not numeric, int(label) if numeric else 0, label)


def load_task_data(cfg: TrainConfig, task: str) -> tuple[Any, Any, list[str]]:
    """(train examples, dev examples, label names) with labels checked against the task."""
    from edgeslim import data

    columns = (cfg.text_column, cfg.pair_column, cfg.label_column)
    train, dev, _ = data.train_and_dev(
        cfg.data, cfg.eval, columns, cfg.data_dir, (cfg.train_size, cfg.eval_size)
    )
    if train.labels is None or dev.labels is None:
        raise InputError("training needs labels: pass --label-column")
    if task == "regression":
        data.scores(train), data.scores(dev)  # numeric, finite: InputError naming the row
        return train, dev, []
    if task == "token-classification":
        names = sorted({tag for tags in train.labels for tag in tags.split(" ")})
        seen = {tag for tags in dev.labels for tag in tags.split(" ")}
    else:
        names = sorted(set(train.labels), key=_label_order)
        seen = set(dev.labels)
    if len(names) > 1000 or (task == "sequence-classification" and len(names) > len(train) / 2):
        raise InputError(f"{cfg.data} has {len(names)} distinct labels: is this a {task} dataset?")
    unknown = seen - set(names)
    if unknown:
        raise InputError(
            f"dev labels {sorted(unknown)[:5]} do not occur in the training data: "
            f"is {task} the right --task for {cfg.data}?"
        )
    return train, dev, names


def label_values(examples: Any, task: str, names: list[str]) -> list[Any]:
    """Labels as training targets: floats (regression), class ids, or per-word id lists."""
    index = {name: i for i, name in enumerate(names)}
    if task == "regression":
        return [float(x) for x in examples.labels]
    if task == "token-classification":
        return [[index[tag] for tag in tags.split(" ")] for tags in examples.labels]
    return [index[x] for x in examples.labels]


def finish(out: Path, source: Path, record: dict[str, Any]) -> None:
    """Move the best weights (out/best) up into `out`, add the tokenizer and a training record,
    drop the checkpoint."""
    for item in (out / "best").iterdir():
        shutil.move(str(item), out / item.name)
    models.save_tokenizer(source, out)
    for leftover in ("best", "checkpoint"):
        path = out / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (out / "edgeslim-train.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Fine-tune `src` (packaged name or HF directory) into the HF directory `out`."""
    import torch

    from edgeslim import simplify, training

    path = models.resolve(src)
    train, dev, names = load_task_data(cfg, cfg.task)
    torch.manual_seed(cfg.seed)  # the new head's initialisation is part of the run
    model = models.load(path, cfg.task, labels=names or None).train()
    simplify.tie_shared_(model)
    result = training.fit(
        model, path, train, dev, names, cfg, cfg.task, training.task_loss, out, fingerprint(src, cfg)
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
