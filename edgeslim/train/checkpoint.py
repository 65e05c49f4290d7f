"""Training checkpoints: every `save_every` steps the loop writes its whole state to the folder
<work>/checkpoint (built under a temporary name, then renamed, so a crash mid-write keeps the
previous one):

    state.json          format, run fingerprint, loop state, scheduler, Python/NumPy RNG (JSON)
    model.safetensors   the weights
    extra.safetensors   torch (and CUDA) RNG states, the hook's tensors (sparsity masks, scores)
    optimizer.safetensors  the optimizer state's tensors (`state.PARAM.NAME`); its other values
                        and the param groups are in state.json (`optimizer`)

Nothing is unpickled: every file is JSON or safetensors, the fingerprint in state.json is
checked before any tensor file is opened, and a damaged checkpoint is an InputError naming the
folder to delete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeslim.errors import InputError, OutputError

CHECKPOINT = "checkpoint"
FORMAT = "edgeslim.checkpoint/2"  # /1 kept the optimizer state as a torch pickle
STATE, WEIGHTS, EXTRA, OPTIMIZER = (
    "state.json",
    "model.safetensors",
    "extra.safetensors",
    "optimizer.safetensors",
)


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    step: int = 0
    micro: int = 0
    best: dict[str, float] | None = None
    bad_evals: int = 0
    losses: list[float] = field(default_factory=list)


def _rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-able Python and NumPy generator states, torch/CUDA generator states as tensors)."""
    import random

    import numpy as np
    import torch

    version, keys, gauss = random.getstate()
    name, words, pos, has_gauss, cached = np.random.get_state(legacy=True)
    numpy_state = [name, np.asarray(words).tolist(), pos, has_gauss, cached]
    plain = {"python": [version, list(keys), gauss], "numpy": numpy_state}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": t for i, t in enumerate(torch.cuda.get_rng_state_all())}
    return plain, tensors


def _set_rng_state(plain: dict[str, Any], tensors: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    version, keys, gauss = plain["python"]
    random.setstate((int(version), tuple(int(k) for k in keys), gauss))
    name, words, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state(
        (str(name), np.asarray(words, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
    )
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _write_checkpoint(
    folder: Path, model: Any, optimizer: Any, plain: dict[str, Any], tensors: dict[str, Any]
) -> None:
    """The checkpoint files into `folder`; state.json last (its presence marks a complete write)."""
    from safetensors.torch import save_file, save_model

    folder.mkdir()
    save_model(model, str(folder / WEIGHTS))  # shared (tied) tensors stored once
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / EXTRA))
    optimizer_tensors, optimizer_plain = _split_optimizer(optimizer.state_dict())
    save_file(optimizer_tensors, str(folder / OPTIMIZER))
    (folder / STATE).write_text(json.dumps({**plain, "optimizer": optimizer_plain}))
    for name in (WEIGHTS, EXTRA, OPTIMIZER, STATE):
        with (folder / name).open("rb") as handle:
            os.fsync(handle.fileno())


def save(
    work: Path, model: Any, optimizer: Any, scheduler: Any, state: LoopState, fingerprint: str, hook: Any
) -> None:
    """Write <work>/checkpoint atomically: a failed write (e.g. disk full) keeps the previous one."""
    import torch

    rng, tensors = _rng_state()
    hook_state = hook.state_dict() if hook is not None else {}  # flat: tensors and plain values
    tensors |= {f"hook.{k}": v for k, v in hook_state.items() if isinstance(v, torch.Tensor)}
    hook_plain = {k: v for k, v in hook_state.items() if not isinstance(v, torch.Tensor)}
    plain = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "loop": asdict(state),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "hook": hook_plain,
    }
    final, tmp, old = work / CHECKPOINT, work / f".{CHECKPOINT}.tmp", work / f".{CHECKPOINT}.old"
    try:
        _remove(tmp)
        _write_checkpoint(tmp, model, optimizer, plain, tensors)
        if final.exists():
            _remove(old)
            os.replace(final, old)
        os.replace(tmp, final)  # a kill between the two renames leaves .checkpoint.old: see tidy
        _remove(old)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(
            f"cannot write a checkpoint in {work} ({exc.strerror}): free disk space and rerun "
            "the same command to resume from the last checkpoint"
        ) from None


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """optimizer.state_dict() -> (its tensors as `state.PARAM.NAME`, the rest as JSON values)."""
    import torch

    tensors: dict[str, Any] = {}
    values: dict[str, dict[str, Any]] = {}
    for param, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param}.{name}"] = value.detach().contiguous()
            else:
                values.setdefault(str(param), {})[name] = value
    return tensors, {"values": values, "param_groups": state["param_groups"]}


def _join_optimizer(tensors: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """The optimizer.state_dict() that _split_optimizer split."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param, name = key.split(".", 2)
        state.setdefault(int(param), {})[name] = value
    for param, entries in plain["values"].items():
        state.setdefault(int(param), {}).update(entries)
    return {"state": state, "param_groups": plain["param_groups"]}


def tidy(work: Path) -> None:
    """Undo what a kill mid-write left: a checkpoint or best model renamed aside is put back
    (killed between two renames), half-written temporaries are removed."""
    for name in (CHECKPOINT, "best"):
        final, old, tmp = work / name, work / f".{name}.old", work / f".{name}.tmp"
        if not final.exists() and old.is_dir():
            os.replace(old, final)
        for leftover in (old, tmp):
            if leftover.exists() or leftover.is_symlink():
                _remove(leftover)


def _read_state(folder: Path, fingerprint: str) -> dict[str, Any]:
    """state.json, checked (format, then fingerprint) before any tensor file is opened."""
    redo = f"delete {folder} to start this run over"
    if not folder.is_dir():
        raise InputError(f"{folder} is a checkpoint file of an older edgeslim (a pickle; not read): {redo}")
    try:
        plain = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder} is damaged ({STATE}: {exc}): {redo}") from None
    if not isinstance(plain, dict) or plain.get("format") != FORMAT:
        raise InputError(f"{folder}/{STATE} is not an {FORMAT} checkpoint: {redo}")
    if plain.get("fingerprint") != fingerprint:
        raise InputError(
            f"{folder} belongs to a different run (another model, data or setting): {redo}, "
            "or write to another output"
        )
    return plain


def _loop_state(saved: Any) -> LoopState:
    """LoopState from JSON, with its types checked (a hand-edited file fails here, not mid-run)."""
    state = LoopState(**saved)
    ints = (state.step, state.micro, state.bad_evals)
    if not all(type(v) is int and v >= 0 for v in ints) or not isinstance(state.losses, list):
        raise ValueError("loop state has wrong types")
    if state.best is not None and not isinstance(state.best, dict):
        raise ValueError("loop state has wrong types")
    return state


def resume(
    folder: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any, hook: Any, rebuild: Any
) -> tuple[LoopState, Any, Any]:
    """Load the checkpoint in `folder` into the model, optimizer, scheduler, RNGs and hook; returns
    (loop state, optimizer, scheduler). The hook comes first: one that reshapes the model (pruning
    while training) rebuilds the saved shape, then `rebuild(optimizer, scheduler)` makes an
    optimizer for its parameters, before the weights and optimizer state are loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    plain = _read_state(folder, fingerprint)
    try:
        state = _loop_state(plain["loop"])
        tensors = load_file(str(folder / EXTRA))
        if hook is not None:
            mine = {k.removeprefix("hook."): v for k, v in tensors.items() if k.startswith("hook.")}
            if hook.load_state_dict({**plain["hook"], **mine}):
                optimizer, scheduler = rebuild(optimizer, scheduler)
        load_model(model, str(folder / WEIGHTS), strict=True)
        optimizer.load_state_dict(_join_optimizer(load_file(str(folder / OPTIMIZER)), plain["optimizer"]))
        scheduler.load_state_dict(plain["scheduler"])
        _set_rng_state(plain["rng"], tensors)
    except (
        OSError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        SafetensorError,
    ) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"{folder} is damaged or incomplete ({reason}): delete it to start this run over"
        ) from None
    return state, optimizer, scheduler
