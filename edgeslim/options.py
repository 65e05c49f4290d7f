"""Typer option aliases shared by commands, so an option is declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, overload

import typer

Output = Annotated[Path, typer.Option("--output", "-o", help="Artifact directory to write.")]
Force = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ArtifactArg = Annotated[Path, typer.Argument(help="An edgeslim artifact directory.")]

# The common training flags (finetune, distill), declared once.
MaxSteps = Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")]
Epochs = Annotated[float, typer.Option(help="Passes over the training data.")]
BatchSize = Annotated[int, typer.Option(help="Examples per step (per process).")]
Lr = Annotated[float, typer.Option(help="Peak learning rate.")]
MaxLength = Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")]
RecoverEval = Annotated[str, typer.Option("--eval", help="Dev data tracked during recovery.")]
Seed = Annotated[int, typer.Option(help="Seed for init, data order and dropout.")]
EvalEvery = Annotated[int, typer.Option(help="Evaluate every N steps.")]
SaveEvery = Annotated[int, typer.Option(help="Checkpoint every N steps (resume).")]
TrainSize = Annotated[int | None, typer.Option(help="Use the first N training examples.")]
EvalSize = Annotated[int | None, typer.Option(help="Use the first N dev examples.")]


@overload
def positive_list(text: str, option: str) -> tuple[int, ...]: ...
@overload
def positive_list(text: str, option: str, kind: type[float]) -> tuple[float, ...]: ...
def positive_list(text: str, option: str, kind: type[int] | type[float] = int) -> tuple[float, ...]:
    """'1,2,4' -> (1, 2, 4) of `kind`; an InputError naming `option` unless all are positive."""
    from edgeslim.errors import InputError

    try:
        values = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        what, example = ("integers", "1,2") if kind is int else ("numbers", "2,4")
        raise InputError(f"{option} takes comma-separated positive {what}, e.g. {example} (got '{text}')")
    return values
