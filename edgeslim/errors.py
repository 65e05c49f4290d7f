"""One error base class; the CLI turns each subclass into its documented exit code.

Every message says what to do next. Exit codes (also in the README):

    0  success
    1  internal error (a bug: rerun with --debug and report the traceback)
    2  usage error (unknown command or option; typer's own code)
    3  bad input (missing path, corrupt file, unsupported architecture, bad recipe)
    4  output problem (output exists without --force, not writable)
    5  validation failed (ONNX vs PyTorch parity, required fusion missing)
    6  budget not met (gate, --max-drop)
    7  execution provider unavailable
    8  missing dependency (an optional extra is not installed)
"""

from __future__ import annotations


class EdgeslimError(Exception):
    """Base of every error edgeslim reports to a user; `exit_code` is its CLI code."""

    exit_code = 1


class InputError(EdgeslimError):
    """The user's input (path, file, recipe, option value) cannot be used."""

    exit_code = 3


class UnsupportedArchitecture(InputError):
    """The model's architecture is not in edgeslim's table."""


class OutputError(EdgeslimError):
    """The output cannot be written (exists without --force, not writable)."""

    exit_code = 4


class ValidationFailed(EdgeslimError):
    """A produced artifact failed a check (parity, fusion coverage)."""

    exit_code = 5


class ParityError(ValidationFailed):
    """ONNX Runtime outputs differ from PyTorch's beyond tolerance."""


class BudgetNotMet(EdgeslimError):
    """A budget (size, latency, accuracy) is exceeded."""

    exit_code = 6


class ProviderUnavailable(EdgeslimError):
    """An onnxruntime execution provider was asked for but is not available."""

    exit_code = 7


class MissingDependency(EdgeslimError):
    """An optional dependency (extra) is not installed."""

    exit_code = 8


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI cancel, `timeout`, `kill`), raised in the main thread so that cleanup runs
    exactly as for Ctrl-C: temporaries removed, locks released. Exit code 143 (128 + 15)."""


def raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM handler installed by the CLI."""
    raise Terminated()


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug): rerun with --debug and report the traceback",
    2: "usage error: unknown command or option",
    3: "bad input: missing path, corrupt file, unsupported architecture, bad recipe",
    4: "output problem: output exists (use --force) or is not writable",
    5: "validation failed: parity or required fusion",
    6: "budget not met",
    7: "execution provider unavailable",
    8: "missing dependency: install the extra the message names",
}


def require(module: str, extra: str) -> None:
    """Raise MissingDependency naming the pip extra when `module` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(f"'{module}' is not installed: run pip install 'edgeslim[{extra}]'")
