"""Step registry. A step is one module here with:

    Config      a frozen pydantic model whose `type` field is the step's name
    run(src, config, out) -> dict
                writes the step's artifact into the (staging) directory `out` and returns
                a summary for the terminal; `src` is the previous artifact directory, or the
                model name/path for steps whose Config has `takes_model = True`
    command     the typer command function for the CLI

Adding a step = one new file plus one line in STEP_MODULES. Modules import torch,
transformers and onnxruntime only inside functions, so loading the registry stays cheap.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

STEP_MODULES: tuple[str, ...] = (
    "finetune",
    "distill",
    "shapes",
    "prune",
    "simplify",
    "export",
    "optimize",
    "quantize",
    "evaluate",
    "benchmark",
    "gate",
    "report",
    "inspect",
)


class StepConfig(BaseModel):
    """Base of every step config: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    takes_model: ClassVar[bool] = False  # True: the step's input is a model, not an artifact
    produces_model: ClassVar[bool] = False  # True: it writes a HF model directory, not an artifact
    resumable: ClassVar[bool] = False  # True: its partial output survives a crash, to resume
    host_dependent: ClassVar[bool] = False  # True: it measures, or picks defaults from the CPU


@cache
def modules() -> dict[str, ModuleType]:
    """Step type (its Config's `type`, also the CLI command) -> module, in registry order."""
    loaded = [importlib.import_module(f"edgeslim.steps.{name}") for name in STEP_MODULES]
    return {module.Config.model_fields["type"].default: module for module in loaded}
