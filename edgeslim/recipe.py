"""Recipes: YAML -> validated pydantic models; unknown keys rejected with "did you mean"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from edgeslim import steps
from edgeslim.config import StepConfig, make_config, suggest
from edgeslim.errors import InputError


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
                    f"{suggest(str(kind), list(registry))}; known: {', '.join(registry)}"
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


def load(path: Path) -> Recipe:
    """Read and validate a recipe file (strict YAML: no duplicate keys, no custom tags)."""
    import yaml

    if not path.is_file():
        raise InputError(f"recipe {path} not found: give a YAML file such as recipes/minilm-export.yaml")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"recipe {path} is not UTF-8 text: re-save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise InputError(f"recipe {path} must be a mapping with name, model, output and steps")
    return make_config(Recipe, where=f"recipe {path}", **data)


def _yaml_problem(exc: Exception) -> str:
    """One line: the problem and where (PyYAML's messages span several lines)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())[:300]


def _strict_loader() -> Any:
    """yaml.SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently) and
    any tag beyond plain YAML's (safe_load already refuses !!python/...; this also refuses
    !!binary, !!set, !!timestamp and unknown local tags with one clear message)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key '{key}' appears twice (first at line {seen[key].line + 1}): keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    plain = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}

    def refuse(loader: Any, node: Any) -> Any:
        raise yaml.constructor.ConstructorError(
            None, None, f"tag '{node.tag}' is not allowed in a recipe: write plain values", node.start_mark
        )

    for tag in list(StrictLoader.yaml_constructors):
        if tag is not None and tag not in plain:
            StrictLoader.add_constructor(tag, refuse)
    StrictLoader.add_constructor(None, refuse)  # unknown tags (!include, !!python/object, ...)
    # An unquoted date (name: 2024-05-01) stays the text it reads as.
    StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: str(node.value))
    return StrictLoader
