"""qat: quantization-aware training; int8 weights and activations in every Linear, distilled from
the fp32 model; output a HF directory that `export` writes as QDQ ONNX. The run itself is
train/lowbit.py's, the layers lowbit.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
    Kl,
    LabelColumn,
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
)
from edgeslim.train.lowbit import LowBitWeights, QatConfig

Config = QatConfig  # the training layer takes it, so it is defined there


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Quantization-aware training of `src` into the HF directory `out`."""
    from edgeslim.train import lowbit

    return lowbit.run(src, cfg, out)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(
    model: Annotated[str, typer.Argument(help="The fp32 model (HF directory) to train low-bit.")],
    output: Output,
    teacher: Annotated[Path | None, _option("teacher")] = None,
    layers: Annotated[str | None, _option("layers")] = None,
    ranges: Annotated[str | None, _option("ranges")] = None,
    reduce_range: Annotated[bool | None, _option("reduce_range")] = None,
    kl: Kl = None,
    soft_ce: SoftCe = None,
    nll: Nll = None,
    min_confidence: MinConfidence = None,
    alpha: Alpha = None,
    hidden: Annotated[float | None, field_option(LowBitWeights, "hidden")] = None,
    attention: Attention = None,
    cosine: Cosine = None,
    mse: Mse = None,
    temperature: Temperature = None,
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
    lr: Annotated[float | None, _option("lr")] = None,
    max_length: MaxLength = None,
    seed: Seed = None,
    eval_every: EvalEvery = None,
    save_every: SaveEvery = None,
    patience: Patience = None,
    precision: Precision = None,
    force: Force = False,
    dry_run: DryRun = False,
) -> None:
    """Quantization-aware training: int8 weights and learned int8 input ranges in every Linear,
    distilled from the fp32 model (resumable)."""
    from edgeslim.steps import run_single
    from edgeslim.train.lowbit import config_from

    run_single(model, config_from(Config, locals()), output, force, dry_run)
