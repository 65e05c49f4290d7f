"""The plain option aliases commands share (no config behind them). Kept apart from options.py,
which builds options from the pydantic configs, so that the CLI's own commands load fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Output = Annotated[Path, typer.Option("--output", "-o", help="Artifact directory to write.")]
Force = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the recipe step this would run (YAML); run nothing.")
]
ArtifactArg = Annotated[Path, typer.Argument(help="An edgeslim artifact directory.")]
