"""Recipes: YAML -> validated pydantic models; unknown keys rejected with "did you mean"."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from edgeslim import steps
from edgeslim.errors import InputError
from edgeslim.steps import StepConfig

C = TypeVar("C", bound=BaseModel)


class Recipe(BaseModel):
    """A named chain of steps applied to one model, ending in one artifact directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Recipe name, recorded in the artifact.")
    description: str = Field("", description="What the recipe is for.")
    model: str = Field(description="Packaged model name (minilm) or a local HF directory.")
    output: Path = Field(description="Final artifact directory (relative to the working dir).")
    steps: list[SerializeAsAny[StepConfig]] = Field(min_length=1)

    @field_validator("steps", mode="before")
    @classmethod
    def _typed_steps(cls, value: Any) -> Any:
        """Turn each `{type: ..., ...}` mapping into that step's Config."""
        if not isinstance(value, list):
            return value
        registry = steps.modules()
        typed = []
        for index, item in enumerate(value):
            if not isinstance(item, dict) or "type" not in item:
                raise ValueError(f"step {index + 1} needs a 'type' ({', '.join(registry)})")
            kind = item["type"]
            if kind not in registry:
                raise ValueError(
                    f"step {index + 1}: unknown step type '{kind}'"
                    f"{_suggest(str(kind), list(registry))}; known: {', '.join(registry)}"
                )
            typed.append(
                make_config(
                    registry[kind].Config,
                    where=f"step {index + 1} ({kind})",
                    **{k: v for k, v in item.items() if k != "type"},
                )
            )
        current = "model"  # what the previous step produced
        for index, item in enumerate(typed):
            wants = "model" if item.takes_model else "artifact"
            if wants != current:
                where = "the first step" if index == 0 else f"step {index + 1} ({item.type})"
                raise ValueError(
                    f"{where} takes a {wants} but gets a {current}: "
                    + (
                        "the first step must take the model (e.g. export, finetune)"
                        if index == 0
                        else "put model steps (finetune, distill) before export"
                    )
                )
            current = "model" if item.produces_model else "artifact"
            _check_reference(item, index, typed)
        return typed


def step_reference(value: Any) -> int | None:
    """`@N` in a path field (e.g. prune's recover_with: "@1") names step N's output; 1-based."""
    text = str(value) if value is not None else ""
    if not text.startswith("@"):
        return None
    if not text[1:].isdigit():
        raise ValueError(f"'{text}' is not a step reference: write @N for the output of step N")
    return int(text[1:])


def _check_reference(item: StepConfig, index: int, typed: list[StepConfig]) -> None:
    """A reference must name an earlier step that produces a model (a teacher)."""
    number = step_reference(getattr(item, "recover_with", None))
    if number is None:
        return
    if not 1 <= number <= index or not typed[number - 1].produces_model:
        raise ValueError(
            f"step {index + 1} ({getattr(item, 'type', '?')}): recover_with @{number} must name an "
            "earlier step that makes a model (finetune, distill, prune, simplify)"
        )


def _suggest(key: str, known: list[str]) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def explain(exc: ValidationError, cls: type[BaseModel], where: str = "") -> str:
    """One line per problem, unknown keys with a suggestion from the model's fields."""
    fields = list(cls.model_fields)
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            problems.append(f"unknown key '{key}'{_suggest(key, fields)}; known: {', '.join(fields)}")
        elif err["type"] == "value_error":
            problems.append(str(err["msg"]).removeprefix("Value error, "))
        else:
            problems.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    prefix = f"{where}: " if where else ""
    return prefix + "; ".join(problems)


def make_config(cls: type[C], where: str = "", **values: Any) -> C:
    """Validate `values` into `cls`, raising InputError with an actionable message."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise InputError(explain(exc, cls, where)) from None


def load(path: Path) -> Recipe:
    """Read and validate a recipe file."""
    import yaml

    if not path.is_file():
        raise InputError(f"recipe {path} not found: give a YAML file such as recipes/minilm-export.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"recipe {path} must be a mapping with name, model, output and steps")
    return make_config(Recipe, where=f"recipe {path}", **data)
