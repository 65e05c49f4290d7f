"""Students made from a teacher by keeping some of its layers (DistilBERT/TinyBERT style)."""

from __future__ import annotations

import copy
from typing import Any

from edgeslim.errors import InputError

INIT = ("every-other", "first-k", "last-k")


def layer_map(num_teacher: int, keep: int | None, init: str) -> list[int]:
    """Teacher layer indices the student's layers are copied from, in order.

    `init` is every-other, first-k, last-k, or an explicit comma list such as "0,2,4".
    """
    if init not in INIT:
        try:
            chosen = [int(x) for x in init.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"--init '{init}': use {', '.join(INIT)} or a layer list like 0,2,4") from None
        bad = [i for i in chosen if not 0 <= i < num_teacher]
        if bad or not chosen:
            raise InputError(
                f"layer map {init} is outside the teacher's {num_teacher} layers (0..{num_teacher - 1})"
            )
        if chosen != sorted(set(chosen)):
            raise InputError(f"layer map {init} must list distinct layers in increasing order")
        return chosen
    if keep is None or not 0 < keep <= num_teacher:
        raise InputError(f"--student-layers must be between 1 and the teacher's {num_teacher} layers")
    if init == "first-k":
        return list(range(keep))
    if init == "last-k":
        return list(range(num_teacher - keep, num_teacher))
    step = num_teacher / keep  # every-other for keep = n/2; spread evenly otherwise, ending at the top
    return sorted({min(num_teacher - 1, round((i + 1) * step) - 1) for i in range(keep)})


def _layers(model: Any) -> Any:
    """The ModuleList of transformer blocks for the supported encoders."""
    base = getattr(model, model.base_model_prefix, model)
    encoder = getattr(base, "encoder", None) or getattr(base, "transformer", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise InputError(
            f"cannot find the layers of {type(model).__name__}: layer reduction supports "
            "BERT, RoBERTa, DistilBERT, ELECTRA, XLM-RoBERTa and DeBERTa-v2"
        )
    return layers


def reduce_layers(teacher: Any, mapping: list[int]) -> Any:
    """A copy of `teacher` keeping the mapped layers (embeddings and heads copied too)."""
    import torch

    student = copy.deepcopy(teacher)
    layers = _layers(student)
    kept = torch.nn.ModuleList([layers[i] for i in mapping])
    parent = getattr(student, student.base_model_prefix, student)
    container = getattr(parent, "encoder", None) or parent.transformer
    container.layer = kept
    key = "n_layers" if hasattr(student.config, "n_layers") else "num_hidden_layers"
    setattr(student.config, key, len(mapping))
    return student
