"""Terminal output: results to stdout, progress and notes to stderr."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def note(message: str) -> None:
    """A progress or status line on stderr."""
    err.print(escape(message))


def text(block: str) -> None:
    """Plain text (a table, say) on stdout, as it is: no markup, no highlighting."""
    out.print(block, markup=False, soft_wrap=True, end="" if block.endswith("\n") else "\n")


def markdown(text: str) -> None:
    """Render Markdown on stdout."""
    out.print(Markdown(text))


def summary(title: str, values: dict[str, Any]) -> None:
    """`title` then one `key: value` line per entry, on stdout."""
    out.print(f"[bold]{escape(title)}[/bold]")
    for key, value in values.items():
        out.print(f"  {escape(str(key))}: {escape(str(value))}")


T = TypeVar("T")


def progress(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    from rich.progress import track

    yield from track(items, description=label, total=total, console=err, transient=True)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence library warnings while a block runs.

    onnxruntime's fuser and quantizer log every pattern miss and opset bump, from loggers
    named after their modules (imported as top-level modules), so the root logger is raised.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
