"""Typer options made from config fields, and the option aliases commands share.

A default lives once, in a step's Config. A command's option for a Config field is named as the
field (its flag may differ, e.g. --format for `format`), defaults to None, and the command hands
its values to make_config, which drops the Nones: the Config fills in its defaults. The help
shows the field's description, choices and default (`field_option`), so the user still sees
them. tests/test_cli_config.py checks that every field has its option and reaches the config.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.markup import escape

from edgeslim.train.config import TrainConfig, Weights


def choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal annotation (also inside `X | None`), else ()."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(v for arg in typing.get_args(annotation) for v in choices(arg))
    return ()


def shown_default(value: Any, flags: tuple[str, str] | None = None) -> str | None:
    """How help text shows a field's default: None for none; `flags` (on, off) for a bool,
    written as typer writes a bool flag's default; 1,2 for a tuple."""
    if value is None or value is PydanticUndefined or value == ():
        return None
    if isinstance(value, bool):
        on, off = flags or ("on", "off")
        return (on if value else off).lstrip("-")
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def field_option(
    cls: type[BaseModel], name: str, *decls: str, help: str | None = None, default: bool = True
) -> Any:
    """A typer.Option for field `name` of `cls`: help from the field's description (or `help`),
    then its choices and its default (unless `default` is False); the option itself has no
    default (the command's parameter defaults to None and the Config fills it)."""
    field = cls.model_fields[name]
    text = (help or field.description or "").rstrip()
    values = choices(field.annotation)
    if values:
        text += f" One of: {', '.join(str(v) for v in values)}."
    on, off = f"--{name.replace('_', '-')}", f"--no-{name.replace('_', '-')}"  # typer's own bool flags
    for decl in decls:
        if "/" in decl:  # declared, e.g. --per-channel/--per-tensor
            on, _, off = decl.partition("/")
    shown = shown_default(field.default, (on, off)) if default else None
    if shown is not None:
        text += f" [default: {shown}]"
    return typer.Option(*decls, help=escape(text), show_default=False)  # [..] is not rich markup


# The training flags finetune and distill share (TrainConfig's fields), declared once.
Data = Annotated[str | None, field_option(TrainConfig, "data")]
Eval = Annotated[str | None, field_option(TrainConfig, "eval", "--eval")]
TextColumn = Annotated[str | None, field_option(TrainConfig, "text_column")]
PairColumn = Annotated[str | None, field_option(TrainConfig, "pair_column")]
LabelColumn = Annotated[str | None, field_option(TrainConfig, "label_column")]
DataDir = Annotated[Path | None, field_option(TrainConfig, "data_dir")]
TrainSize = Annotated[int | None, field_option(TrainConfig, "train_size")]
EvalSize = Annotated[int | None, field_option(TrainConfig, "eval_size")]
MaxSteps = Annotated[int | None, field_option(TrainConfig, "max_steps")]
Epochs = Annotated[float | None, field_option(TrainConfig, "epochs")]
BatchSize = Annotated[int | None, field_option(TrainConfig, "batch_size")]
GradAccum = Annotated[int | None, field_option(TrainConfig, "grad_accum")]
Lr = Annotated[float | None, field_option(TrainConfig, "lr")]
MaxLength = Annotated[int | None, field_option(TrainConfig, "max_length")]
Seed = Annotated[int | None, field_option(TrainConfig, "seed")]
EvalEvery = Annotated[int | None, field_option(TrainConfig, "eval_every")]
SaveEvery = Annotated[int | None, field_option(TrainConfig, "save_every")]
Patience = Annotated[int | None, field_option(TrainConfig, "patience")]
Precision = Annotated[str | None, field_option(TrainConfig, "precision")]

# The distillation loss weights (distill's and shapes' `losses`), one flag per term.
Kl = Annotated[float | None, field_option(Weights, "kl")]
SoftCe = Annotated[float | None, field_option(Weights, "soft_ce")]
Nll = Annotated[float | None, field_option(Weights, "nll")]
MinConfidence = Annotated[float | None, field_option(Weights, "min_confidence")]
Alpha = Annotated[float | None, field_option(Weights, "alpha")]
Hidden = Annotated[float | None, field_option(Weights, "hidden")]
Attention = Annotated[float | None, field_option(Weights, "attention")]
Cosine = Annotated[float | None, field_option(Weights, "cosine")]
Mse = Annotated[float | None, field_option(Weights, "mse")]
Temperature = Annotated[float | None, field_option(Weights, "temperature")]


def losses(**weights: float | None) -> dict[str, float]:
    """The `losses` mapping of the loss flags given (the others keep Weights' defaults)."""
    return {name: value for name, value in weights.items() if value is not None}


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
