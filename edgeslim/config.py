"""Config classes and their validation: the frozen StepConfig base every step's Config extends,
and make_config, which turns plain values into a config or an InputError that names each bad
key (with a "did you mean" from the fields of the model it was written in)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgeslim.errors import InputError

C = TypeVar("C", bound=BaseModel)


class StepConfig(BaseModel):
    """Base of every step config: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str  # the step's name: each step's Config narrows it to Literal["name"] = "name"
    takes_model: ClassVar[bool] = False  # True: the step's input is a model, not an artifact
    produces_model: ClassVar[bool] = False  # True: it writes a HF model directory, not an artifact
    resumable: ClassVar[bool] = False  # True: its partial output survives a crash, to resume
    host_dependent: ClassVar[bool] = False  # True: it measures, or picks defaults from the CPU


def suggest(key: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `known`, or ''."""
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _model_at(cls: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel]:
    """The pydantic model that holds the key at `path` (a nested config such as distill's
    `losses` or `augment`); `cls` when the path leaves the models."""
    import typing

    for part in path:
        field = cls.model_fields.get(str(part))
        if field is None:
            return cls
        kinds = [field.annotation, *typing.get_args(field.annotation)]
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not nested:
            return cls
        cls = nested[0]
    return cls


def explain(exc: ValidationError, cls: type[BaseModel], where: str = "") -> str:
    """One line per problem, unknown keys with a suggestion from the fields of the model (or
    nested model, e.g. distill's `losses`) they were written in."""
    prefix = f"{where}: " if where else ""
    return prefix + "; ".join(describe(exc.errors(), cls))


def describe(errors: Iterable[Mapping[str, Any]], cls: type[BaseModel]) -> list[str]:
    """Each of pydantic's `errors` for data validated into `cls` (locations relative to it)
    as a sentence; an unknown key with a "did you mean" from the keys it was written among."""
    problems = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            fields = list(_model_at(cls, tuple(err["loc"][:-1])).model_fields)
            inside = f" in '{'.'.join(map(str, err['loc'][:-1]))}'" if len(err["loc"]) > 1 else ""
            problems.append(f"unknown key '{key}'{inside}{suggest(key, fields)}; known: {', '.join(fields)}")
        elif err["type"] == "value_error":
            problems.append(str(err["msg"]).removeprefix("Value error, "))
        else:
            problems.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return problems


def make_config(cls: type[C], where: str = "", **values: Any) -> C:
    """Validate `values` into `cls`, raising InputError with an actionable message."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise InputError(explain(exc, cls, where)) from None
