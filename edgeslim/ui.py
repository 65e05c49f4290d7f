"""Terminal output: results to stdout, progress and notes to stderr."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def note(message: str) -> None:
    """A progress or status line on stderr."""
    err.print(escape(message))


def markdown(text: str) -> None:
    """Render Markdown on stdout."""
    out.print(Markdown(text))


def summary(title: str, values: dict[str, Any]) -> None:
    """`title` then one `key: value` line per entry, on stdout."""
    out.print(f"[bold]{escape(title)}[/bold]")
    for key, value in values.items():
        out.print(f"  {escape(str(key))}: {escape(str(value))}")
