"""Typer option aliases shared by commands, so an option is declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Output = Annotated[Path, typer.Option("--output", "-o", help="Artifact directory to write.")]
Force = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ArtifactArg = Annotated[Path, typer.Argument(help="An edgeslim artifact directory.")]
