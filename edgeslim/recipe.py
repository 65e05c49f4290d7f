"""Recipes: YAML -> validated pydantic models. A recipe's steps are the step configs as a union
tagged by `type` (so a recipe file has a JSON Schema: `edgeslim recipe-schema`); an unknown
step type or key is rejected with a "did you mean"."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeslim import steps
from edgeslim.config import describe, suggest
from edgeslim.errors import InputError
from edgeslim.steps.benchmark import Config as BenchConfig
from edgeslim.steps.distill import Config as DistillConfig
from edgeslim.steps.evaluate import Config as EvalConfig
from edgeslim.steps.export import Config as ExportConfig
from edgeslim.steps.finetune import Config as FinetuneConfig
from edgeslim.steps.gate import Config as GateConfig
from edgeslim.steps.inspect import Config as InspectConfig
from edgeslim.steps.optimize import Config as OptimizeConfig
from edgeslim.steps.prune import Config as PruneConfig
from edgeslim.steps.quantize import Config as QuantizeConfig
from edgeslim.steps.report import Config as ReportConfig
from edgeslim.steps.shapes import Config as ShapesConfig
from edgeslim.steps.simplify import Config as SimplifyConfig
from edgeslim.train.lowbit import BinarizeConfig, QatConfig

# One recipe step: the Config of the step its `type` names (the registry's steps, in its order;
# tests/test_recipe.py checks that the two agree).
Step = Annotated[
    FinetuneConfig
    | DistillConfig
    | ShapesConfig
    | PruneConfig
    | SimplifyConfig
    | QatConfig
    | BinarizeConfig
    | ExportConfig
    | OptimizeConfig
    | QuantizeConfig
    | EvalConfig
    | BenchConfig
    | GateConfig
    | ReportConfig
    | InspectConfig,
    Field(discriminator="type"),
]


class Recipe(BaseModel):
    """A named chain of steps applied to one model, ending in one artifact directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Recipe name, recorded in the artifact.")
    description: str = Field("", description="What the recipe is for.")
    model: str = Field(description="Packaged model name (minilm) or a local HF directory.")
    output: Path = Field(description="Final artifact directory (relative to the working dir).")
    steps: list[Step] = Field(min_length=1, description="The steps, in order: a `type` and its settings.")

    @field_validator("steps")
    @classmethod
    def _chained(cls, value: list[Step]) -> list[Step]:
        """Each step takes what the one before it makes (a model or an artifact), and an @N
        reference names an earlier step that makes a model."""
        current = "model"  # what the previous step produced
        for index, item in enumerate(value):
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
            _check_reference(item, index, value)
        return value


def _problems(exc: ValidationError) -> list[str]:
    """A recipe's validation errors as sentences: the recipe's own, then one per step with a
    problem, keys checked against that step's fields (a nested key against its own model's)."""
    outside: list[Any] = []
    by_step: dict[int, list[Any]] = {}
    for err in exc.errors():
        loc = err["loc"]
        if len(loc) > 1 and loc[0] == "steps" and isinstance(loc[1], int):
            by_step.setdefault(loc[1], []).append(err)
        else:
            outside.append(err)
    return describe(outside, Recipe) + [_step_problem(i, errors) for i, errors in sorted(by_step.items())]


def _step_problem(index: int, errors: list[Any]) -> str:
    """One step's errors (pydantic puts the step's `type` after its index in each location)."""
    registry = steps.modules()
    first = errors[0]
    if first["type"] == "union_tag_invalid":
        kind = str(first["ctx"]["tag"])
        known = f"{suggest(kind, list(registry))}; known: {', '.join(registry)}"
        return f"step {index + 1}: unknown step type '{kind}'{known}"
    if len(first["loc"]) < 3:  # no `type` to read, or not a mapping
        return f"step {index + 1} needs a 'type' ({', '.join(registry)})"
    kind = str(first["loc"][2])
    inside = [{**e, "loc": e["loc"][3:]} for e in errors]
    return f"step {index + 1} ({kind}): " + "; ".join(describe(inside, registry[kind].Config))


def step_reference(value: Any) -> int | None:
    """`@N` in a path field (e.g. prune's recover_with: "@1") names step N's output; 1-based."""
    text = str(value) if value is not None else ""
    if not text.startswith("@"):
        return None
    if not text[1:].isdigit():
        raise ValueError(f"'{text}' is not a step reference: write @N for the output of step N")
    return int(text[1:])


# Fields that may name an earlier step's model as "@N": prune/simplify's recovery teacher, and
# the teacher qat and binarize distill from.
REFERENCE_FIELDS = ("recover_with", "teacher")


def references(step: Any) -> dict[str, int]:
    """{field: N} for each REFERENCE_FIELDS field of `step` that says "@N"."""
    found = {}
    for field in REFERENCE_FIELDS:
        number = step_reference(getattr(step, field, None))
        if number is not None:
            found[field] = number
    return found


def _check_reference(item: Step, index: int, typed: list[Step]) -> None:
    """A reference must name an earlier step that produces a model (a teacher)."""
    for field, number in references(item).items():
        if not 1 <= number <= index or not typed[number - 1].produces_model:
            raise ValueError(
                f"step {index + 1} ({item.type}): {field} @{number} must name an "
                "earlier step that makes a model (finetune, distill, prune, simplify, qat, binarize)"
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
    try:  # an empty key (`description:`) means its default, as for make_config
        return Recipe.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise InputError(f"recipe {path}: " + "; ".join(_problems(exc))) from None


def schema() -> dict[str, Any]:
    """The JSON Schema of a recipe file (for editors and CI), each step's definition named for
    its type (ExportStep, ...) and requiring that `type`."""
    result = Recipe.model_json_schema()
    names = {}  # pydantic's definition name -> the step's
    for name, body in result["$defs"].items():
        kind = body.get("properties", {}).get("type", {}).get("const")
        if kind is not None:
            names[name] = f"{kind.capitalize()}Step"
            body.update(title=f"{kind} step", required=["type", *body.get("required", [])])
    result["$defs"] = dict(sorted((names.get(name, name), body) for name, body in result["$defs"].items()))
    return _renamed(result, {f"#/$defs/{old}": f"#/$defs/{new}" for old, new in names.items()})


def _renamed(node: Any, refs: dict[str, str]) -> Any:
    """`node` with every string in `refs` replaced (the references to renamed definitions)."""
    if isinstance(node, dict):
        return {key: _renamed(value, refs) for key, value in node.items()}
    if isinstance(node, list):
        return [_renamed(value, refs) for value in node]
    return refs.get(node, node) if isinstance(node, str) else node


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
