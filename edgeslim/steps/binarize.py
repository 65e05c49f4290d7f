"""binarize: ternary or binary weights in the FFN (or attention, or all) Linear layers, trained
by distillation or set directly; output a HF directory that `export` packs as 2-bit
MatMulNBits. The run itself is train/lowbit.py's, the layers lowbit.py's."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

from edgeslim.options import field_option
from edgeslim.steps import qat
from edgeslim.train.lowbit import BinarizeConfig

Config = BinarizeConfig  # the training layer takes it, so it is defined there


def run(src: str, cfg: Config, out: Path) -> dict[str, Any]:
    """Ternary or binary weights for `src` into the HF directory `out`."""
    from edgeslim.train import lowbit

    return lowbit.run(src, cfg, out)


def _option(name: str, *decls: str) -> Any:
    return field_option(Config, name, *decls)


def command(**values: Any) -> None:
    """Ternary or binary weights in the FFN, attention or all Linear layers: trained by
    distillation with straight-through gradients (resumable), or --direct."""
    from edgeslim.steps import run_single
    from edgeslim.train.lowbit import config_from

    run_single(
        values["model"], config_from(Config, values), values["output"], values["force"], values["dry_run"]
    )


def _signature() -> inspect.Signature:
    """qat's command options (the shared training, loss and teacher flags, declared once there),
    with binarize's own in place of qat's layers, ranges and reduce_range."""
    own = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotation)
        for name, annotation in (
            ("weights", Annotated[str | None, _option("weights")]),
            ("layers", Annotated[str | None, _option("layers")]),
            ("direct", Annotated[bool | None, _option("direct")]),
        )
    ]
    shared = list(inspect.signature(qat.command, eval_str=True).parameters.values())
    first = shared[:3]  # model, output, teacher
    rest = [p for p in shared[3:] if p.name not in ("layers", "ranges", "reduce_range")]
    return inspect.Signature([*first, *own, *rest], return_annotation=None)


_SIGNATURE = _signature()
command.__signature__ = _SIGNATURE  # type: ignore[attr-defined]  # what typer reads
command.__annotations__ = {p.name: p.annotation for p in _SIGNATURE.parameters.values()}
