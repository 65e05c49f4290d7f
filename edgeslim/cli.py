"""The edgeslim command line: parse, call, print. Errors become exit codes only here.

Nothing heavy is imported at module load: `edgeslim --help` must not import torch,
transformers or onnxruntime (tests/test_cli.py checks it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from edgeslim import steps
from edgeslim.errors import EXIT_CODES, EdgeslimError, Terminated, raise_terminated
from edgeslim.flags import Force, Json


class _Commands(TyperGroup):
    """The command group; a step's command is built when it runs or its own --help is asked for.

    The group's --help lists every step from steps.STEPS with the docstring read from its source
    (steps.command_help), so it imports no step, no pydantic config and no library module.
    """

    def _load(self, name: str) -> None:
        if name in steps.STEPS and name not in self.commands:
            step = steps.module(name)
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            one.command(name, help=step.command.__doc__)(guarded(step.command))
            self.commands[name] = typer.main.get_command(one)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*steps.STEPS, *(name for name in super().list_commands(ctx) if name not in steps.STEPS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in steps.STEPS and cmd_name not in self.commands:  # listed in the group's help
            return TyperCommand(cmd_name, help=steps.command_help(cmd_name))
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # typer's rich error handler prints nothing for "no arguments, show the help" (it expects
        # its own rich help to be printed already): print the plain help here, exit 2 as before
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(2)
        return list(super().parse_args(ctx, args))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The group's own help in click's plain format: typer's rich one imports rich's
        markdown renderer (~0.15 s of a 0.3 s start); each command's help stays rich."""
        super(TyperGroup, self).format_help(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command with the first paragraph of its help, wrapped (click would cut it short)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, " ".join((command.help or "").split("\n\n")[0].split())))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args:
            self._load(args[0])
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:  # click's UsageError (typer vendors click privately)
            # typer suggests only from the commands built so far: suggest from all of them
            message = getattr(exc, "message", None)
            if args and isinstance(message, str) and "Did you mean" not in message:
                from difflib import get_close_matches

                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    exc.message = f"{message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"  # type: ignore[attr-defined]
            raise


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Turn a pretrained Transformer into a small, fast, verified ONNX artifact.",
    epilog="Exit codes: " + "; ".join(f"{k} {v.split(':')[0]}" for k, v in EXIT_CODES.items()),
)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgeslimError into a one-line message and its exit code (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeslimError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except Terminated:
            typer.echo("terminated (SIGTERM): temporary files removed", err=True)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if _state["debug"]:
                raise
            first = (str(exc).splitlines() or [""])[0][:300]
            typer.echo(
                f"internal error: {type(exc).__name__}: {first} "
                "(rerun with --debug for the traceback and report it)",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper


@app.command()
@guarded
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (see recipes/).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Override the recipe's output.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; run nothing.")] = False,
    force: Force = False,
) -> None:
    """Run every step of a recipe, reusing steps whose config and input are unchanged."""
    from edgeslim import pipeline
    from edgeslim.recipe import load

    pipeline.run_recipe(load(recipe), output, force, dry_run)


@app.command("recipe-schema")
@guarded
def recipe_schema() -> None:
    """Print the JSON Schema of a recipe file (for an editor's YAML support, or CI)."""
    import json

    from edgeslim.recipe import schema

    print(json.dumps(schema(), indent=2))


@app.command()
@guarded
def summary(
    artifact: Annotated[Path, typer.Argument(help="An artifact or report folder with report.json.")],
) -> None:
    """Print the result beside its teacher at a glance: size, latency ratios, metric, gate verdict."""
    from edgeslim import summary as block

    typer.echo(block.text(artifact), nl=False)


@app.command()
@guarded
def doctor(json_out: Json = False) -> None:
    """Versions, CPU flags, execution providers and known-bad combinations."""
    import json

    from edgeslim import doctor as doc
    from edgeslim import ui

    result = doc.report()
    if json_out:
        print(json.dumps(result, indent=2))
        return
    ui.summary("versions", result["versions"])
    cpu = result["cpu"]
    ui.summary("cpu", {"model": cpu["model"], "cores": cpu["cores"], "flags": " ".join(cpu["flags"])})
    ui.summary("execution providers", {"available": ", ".join(result["execution_providers"]) or "none"})
    ui.summary("warnings", {str(i + 1): w for i, w in enumerate(result["warnings"])} or {"none": ""})


@app.command()
@guarded
def verify(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (or a .onnx file).")],
    json_out: Json = False,
) -> None:
    """Check an artifact before trusting it: hashes, external data, symlinks, files, loading (exit 3)."""
    import json

    from edgeslim import verify as check
    from edgeslim.errors import InputError

    result = check.verify(artifact)
    if json_out:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for problem in result.problems:
            typer.echo(f"problem: {problem}")
        for warning in result.warnings:
            typer.echo(f"warning: {warning}")
        if result.ok:
            typer.echo(result.summary())
    if not result.ok:
        raise InputError(result.summary())


def main() -> None:
    """Console entry point. SIGTERM cleans up like Ctrl-C (errors.Terminated)."""
    import signal

    signal.signal(signal.SIGTERM, raise_terminated)
    app(prog_name="edgeslim")


if __name__ == "__main__":
    main()
