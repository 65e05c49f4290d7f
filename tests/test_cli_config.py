"""Every default once: each step command's options are its Config's fields (named as the field,
flags may differ), default to None so that the Config fills them, show the field's default in
their help, and reach the Config when given."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from conftest import cli
from pydantic import BaseModel
from typer.models import OptionInfo

from edgeslim import config, steps
from edgeslim.options import choices, shown_default

FieldPath = tuple[str, ...]  # a path into a Config: ("lr",), ("losses", "kl")

# Options that are not Config fields: where the output goes and how the command prints.
CLI_ONLY = {
    "output": "the output folder (a recipe's is its `output`)",
    "teacher": "distill: its input model (a recipe's is the previous step's)",
    "force": "replace the output",
    "json_out": "print JSON",
    "dry_run": "print the recipe step",
    "out": "bench: also write the results JSON",
    "ep_library": "bench: register a plugin EP first, then bench on it (--ep)",
    "junit": "gate: also write JUnit XML",
}
# Fields no option sets, each with its reason; keep this short.
RECIPE_ONLY: dict[tuple[str, FieldPath], str] = {
    ("gate", ("budgets",)): "budgets written inline in a recipe; the CLI reads them from --budgets FILE",
    ("report", ("baselines",)): "the recipe's teacher and intermediates; a CLI report has no recipe",
    ("report", ("compare",)): "the CLI's positional PATHS after the first (checked below)",
}
# Nested configs are flat options: the subfield's name after a prefix.
NESTED = {
    ("distill", "losses"): "",
    ("distill", "augment"): "augment_",
    ("shapes", "losses"): "",
    ("qat", "losses"): "",
    ("binarize", "losses"): "",
}
RENAMED = {("shapes", ("losses", "hidden")): "hidden_loss"}  # --hidden is shapes' grid of widths
NO_DEFAULT_SHOWN = {("distill", ("augment", "copies")): "giving --augment-copies turns augmentation on"}


@dataclass
class Option:
    """One typer option of a command, read from the command function's signature."""

    flag: str  # e.g. --calib-size; for a bool, the flag that turns it on
    off: str | None  # a bool's flag that turns it off
    kind: Any  # the parameter's type without None
    default: Any  # the parameter's default (inspect.Parameter.empty: required)
    help: str


def options(command: Callable[..., Any]) -> dict[str, Option]:
    """Parameter name (the option's dest) -> Option, for the typer options of `command`."""
    hints = typing.get_type_hints(command, include_extras=True)
    found = {}
    for name, parameter in inspect.signature(command).parameters.items():
        base, *extras = typing.get_args(hints[name])
        info = next((e for e in extras if isinstance(e, OptionInfo)), None)
        if info is None:  # an argument
            continue
        kind = _bare(base)
        # typer.Option("--x") in Annotated: the first declaration sits in `default`
        decls = [info.default] if isinstance(info.default, str) else []
        long = [d for d in [*decls, *(info.param_decls or ())] if d.startswith("--")]
        on, _, off = (long[0] if long else f"--{name.replace('_', '-')}").partition("/")
        if kind is bool and not off:
            off = f"--no-{on[2:]}"
        found[name] = Option(on, off or None, kind, parameter.default, info.help or "")
    return found


def _model(annotation: Any) -> type[BaseModel] | None:
    kinds = [annotation, *typing.get_args(annotation)]
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)


def expected_options(name: str, cls: type[BaseModel]) -> dict[str, FieldPath]:
    """Option name -> the Config field it sets, for step `name` with Config `cls`."""
    wanted: dict[str, FieldPath] = {}
    for field, info in cls.model_fields.items():
        nested = _model(info.annotation)
        if field == "type" or (name, (field,)) in RECIPE_ONLY:
            continue
        if nested is not None and (name, field) in NESTED:
            for sub in nested.model_fields:
                path = (field, sub)
                wanted[RENAMED.get((name, path), NESTED[name, field] + sub)] = path
        else:
            wanted[RENAMED.get((name, (field,)), field)] = (field,)
    return wanted


def problems(name: str, command: Callable[..., Any], cls: type[BaseModel]) -> list[str]:
    """What breaks the rule for one command: fields without an option, options that set no
    field, options with a default of their own, help that hides the field's default."""
    wanted, given = expected_options(name, cls), options(command)
    found = [f"{name}: no option for field {'.'.join(wanted[o])}" for o in sorted(set(wanted) - set(given))]
    found += [f"{name}: option {o} sets no field" for o in sorted(set(given) - set(wanted) - set(CLI_ONLY))]
    for option, path in wanted.items():
        if option not in given:
            continue
        param, info = given[option], _field(cls, path)
        if param.default not in (None, inspect.Parameter.empty):
            found.append(f"{name}: --{option} declares its own default {param.default!r}")
        shown = shown_default(info.default, (param.flag, param.off or ""))
        if shown and (name, path) not in NO_DEFAULT_SHOWN and f"[default: {shown}]" not in param.help:
            found.append(f"{name}: --{option}'s help does not show the default {shown}")
    return found


def _field(cls: type[BaseModel], path: FieldPath) -> Any:
    info = cls.model_fields[path[0]]
    if len(path) == 1:
        return info
    nested = _model(info.annotation)
    assert nested is not None
    return nested.model_fields[path[1]]


def test_every_config_field_is_an_option_and_every_option_a_field() -> None:
    found = [p for name, step in steps.modules().items() for p in problems(name, step.command, step.Config)]
    assert not found, "\n".join(found)


def test_the_check_knows_the_mappings_and_can_fail() -> None:
    """So that an empty list above means something."""
    quantize = expected_options("quantize", steps.modules()["quantize"].Config)
    assert {"calib_batch_size", "fidelity_size", "keep_post_gelu_fp32"} <= set(quantize)
    distill = expected_options("distill", steps.modules()["distill"].Config)
    assert distill["kl"] == ("losses", "kl") and distill["augment_copies"] == ("augment", "copies")
    assert {"grad_accum", "precision"} <= set(distill)
    assert expected_options("shapes", steps.modules()["shapes"].Config)["hidden_loss"] == ("losses", "hidden")
    assert "rtol" in expected_options("export", steps.modules()["export"].Config)

    optimize = steps.modules()["optimize"]

    class Grown(optimize.Config):
        extra_knob: int = 3

    assert problems("optimize", optimize.command, Grown) == ["optimize: no option for field extra_knob"]

    def stale(old: Annotated[int | None, typer.Option()] = None) -> None: ...

    assert "optimize: option old sets no field" in problems("optimize", stale, Grown)

    def own(atol: Annotated[float, typer.Option(help="Tolerance.")] = 0.5) -> None: ...

    assert "optimize: --atol declares its own default 0.5" in problems("optimize", own, Grown)
    assert "optimize: --atol's help does not show the default 0.0001" in problems("optimize", own, Grown)


# Arguments each command needs before its options; values chosen to differ from any generated one.
BASE = {
    "finetune": ["m", "-o", "o"],
    "distill": ["--teacher", "t", "-o", "o"],
    "shapes": ["t", "-o", "o", "--latency-ms", "9", "--layers", "2"],
    "prune": ["m", "-o", "o"],
    "simplify": ["m", "-o", "o"],
    "export": ["m", "-o", "o"],
    "optimize": ["a", "-o", "o"],
    "quantize": ["a", "-o", "o"],
    "eval": ["a", "--data", "d"],
    "bench": ["a"],
    "gate": ["a", "--budgets", "b.yaml"],
    "report": ["a", "-o", "o"],
}


class _Captured(Exception):
    pass


MAKE_CONFIG = config.make_config  # the real one, also while a test replaces it


@functools.cache
def _app(name: str) -> typer.Typer:
    """An app of the one command `name` (the whole app takes 0.1 s to build per invocation)."""
    app = typer.Typer()
    app.command(name)(steps.modules()[name].command)
    return app


def _capture(monkeypatch: pytest.MonkeyPatch, name: str, args: list[str]) -> BaseModel:
    """The Config the command `name` builds from `args` (it is stopped right after)."""
    from typer.testing import CliRunner

    step_config = steps.modules()[name].Config
    made: list[BaseModel] = []

    def make(cls: Any, where: str = "", **values: Any) -> Any:
        result = MAKE_CONFIG(cls, where, **values)
        if cls is step_config:
            made.append(result)
            raise _Captured
        return result

    monkeypatch.setattr(config, "make_config", make)
    result = CliRunner().invoke(_app(name), args)
    assert made, f"{name} {' '.join(args)}: no config built\n{result.output}{result.exception!r}"
    return made[0]


def _value(param: Option, info: Any) -> list[str]:
    """Command-line words that set `param` to a valid value other than the field's default."""
    default, annotation = info.default, info.annotation
    if param.kind is bool:
        return [str(param.off) if default is True else param.flag]
    values = choices(annotation)
    if values:
        return [param.flag, str(next(v for v in values if v != default))]
    if typing.get_origin(param.kind) is list:  # a repeated option
        return [param.flag, "n1"]
    if typing.get_origin(_bare(annotation)) is tuple and param.kind is str:  # comma-separated
        floats = float in typing.get_args(typing.get_args(_bare(annotation))[0])
        return [param.flag, "1.5,2.5" if floats else "3,5"]
    if param.kind is int:
        return [param.flag, str(default + 1 if isinstance(default, int) else 3)]
    if param.kind is float:
        return [param.flag, str(default / 2 if default else 0.5)]
    return [param.flag, "some/other"]


def _bare(annotation: Any) -> Any:
    """`annotation` without `| None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return args[0] if is_union and len(args) == 1 else annotation


def _get(dump: dict[str, Any], path: FieldPath) -> Any:
    value: Any = dump
    for part in path:
        value = (value or {}).get(part)
    return value


@pytest.mark.parametrize("name", list(BASE))
def test_each_option_reaches_its_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given alone (on top of the required arguments), each option changes its field and only
    its field family: the option is wired to the Config, not dropped or sent elsewhere."""
    cls = steps.modules()[name].Config
    given = options(steps.modules()[name].command)
    base = _capture(monkeypatch, name, BASE[name]).model_dump(mode="json")
    for option, path in expected_options(name, cls).items():
        param = given[option]
        words = _value(param, _field(cls, path))
        args, before = list(BASE[name]), base
        if param.flag in args:  # an option BASE gives: replace its value
            at = args.index(param.flag)
            del args[at : at + 2]
        if path[0] == "augment" and option != "augment_copies":  # augmentation on, then the option
            args += ["--augment-copies", "4"]
            before = _capture(monkeypatch, name, args).model_dump(mode="json")
        dump = _capture(monkeypatch, name, [*args, *words]).model_dump(mode="json")
        what = f"{name} {' '.join(words)}"
        assert _get(dump, path) != _get(before, path), f"{what} left {'.'.join(path)} unchanged"
        changed = {k for k in dump if dump[k] != before[k]}
        assert changed <= {path[0]}, f"{what} changed {sorted(changed)}"


def test_report_compares_the_paths_after_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _capture(monkeypatch, "report", ["a", "b", "c", "-o", "o"])
    assert cfg.model_dump(mode="json")["compare"] == ["b", "c"]


@pytest.mark.parametrize("name", [*BASE, "inspect"])
def test_dry_run_prints_the_recipe_step_and_writes_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--dry-run prints the step a recipe would run (read back: the same config) and exits 0
    without writing (the output, bench's --out, gate's --junit)."""
    import yaml
    from pydantic import TypeAdapter

    from edgeslim.recipe import Step

    monkeypatch.chdir(tmp_path)
    args = [*BASE.get(name, ["a"]), *DRY_EXTRA.get(name, [])]
    result = cli([name, *args, "--dry-run"])
    assert result.exit_code == 0, result.output
    (step,) = TypeAdapter(list[Step]).validate_python(yaml.safe_load(result.output))
    assert step.type == name and list(tmp_path.iterdir()) == []
    if name in BASE:
        assert step == _capture(monkeypatch, name, args)


# Non-default settings the printed step must carry, and files the command would write.
DRY_EXTRA = {
    "quantize": ["--mode", "static", "--calib-size", "64", "--exclude-op", "Gemm"],
    "bench": ["--threads", "1,2,4", "--out", "sub/bench.json"],
    "gate": ["--junit", "sub/junit.xml"],
    "distill": ["--kl", "0.5", "--augment-copies", "2"],
    "shapes": ["--speedup", "2", "--hidden-loss", "1"],
    "report": ["b", "--bench", "bench.json"],
}
