"""The training loop shared by finetune and distill, on accelerate (one process, or N under
`accelerate launch` / `torchrun`: each rank takes every N-th batch, DDP averages gradients).

Resumable: every `save_every` steps the whole state is written to the folder <work>/checkpoint
(built under a temporary name, then renamed, so a crash mid-write keeps the previous one):

    state.json          format, run fingerprint, loop state, scheduler, Python/NumPy RNG (JSON)
    model.safetensors   the weights
    extra.safetensors   torch (and CUDA) RNG states, the hook's tensors (sparsity masks, scores)
    optimizer.pt        optimizer.state_dict(): tensors, numbers, lists; read with weights_only=True

No pickle of arbitrary objects is read: the fingerprint in state.json is checked before any
tensor file is opened, and a damaged checkpoint is an InputError naming the folder to delete.
Rerunning the same command continues from it, and the losses after the checkpoint equal an
uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeslim import hardware
from edgeslim.errors import EdgeslimError, InputError, OutputError
from edgeslim.hardware import Target

CHECKPOINT = "checkpoint"
LOG = "train_log.jsonl"
FORMAT = "edgeslim.checkpoint/1"
STATE, WEIGHTS, EXTRA, OPTIMIZER = "state.json", "model.safetensors", "extra.safetensors", "optimizer.pt"


class TrainingFailed(EdgeslimError):
    """Training diverged (NaN/inf loss); the last good checkpoint is kept."""

    exit_code = 5


@dataclass(frozen=True)
class Settings:
    """Loop settings (the common training flags)."""

    max_steps: int | None
    epochs: float
    batch_size: int
    lr: float
    seed: int
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    eval_every: int = 200
    save_every: int = 200
    patience: int | None = None  # evals without improvement before stopping early
    precision: str = "fp32"


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    step: int = 0
    micro: int = 0
    best: dict[str, float] | None = None
    bad_evals: int = 0
    losses: list[float] = field(default_factory=list)


def check_precision(precision: str, target: Target | None = None, cuda: bool | None = None) -> None:
    """Refuse bf16 where the CPU has no bf16 instructions (a MiniLM step: 30.9 s vs 1.37 s).

    `target` and `cuda` default to this machine's; tests pass them in.
    """
    if precision != "bf16":
        return
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda and not (target or hardware.detect()).bf16:
        raise InputError(
            "bf16 was asked for but this CPU has no bf16 instructions (emulated bf16 is "
            "~20x slower here): use --precision fp32"
        )


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
    import torch
    from safetensors.torch import save_file, save_model

    folder.mkdir()
    save_model(model, str(folder / WEIGHTS))  # shared (tied) tensors stored once
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / EXTRA))
    torch.save(optimizer.state_dict(), folder / OPTIMIZER)
    (folder / STATE).write_text(json.dumps(plain))
    for name in (WEIGHTS, EXTRA, OPTIMIZER, STATE):
        with (folder / name).open("rb") as handle:
            os.fsync(handle.fileno())


def _save(
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
        os.replace(tmp, final)  # a kill between the two renames leaves .checkpoint.old: see _tidy
        _remove(old)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(
            f"cannot write a checkpoint in {work} ({exc.strerror}): free disk space and rerun "
            "the same command to resume from the last checkpoint"
        ) from None


def _tidy(work: Path) -> None:
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


def _resume(
    folder: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any, hook: Any, rebuild: Any
) -> tuple[LoopState, Any, Any]:
    """Load the checkpoint in `folder` into the model, optimizer, scheduler, RNGs and hook; returns
    (loop state, optimizer, scheduler). The hook comes first: one that reshapes the model (pruning
    while training) rebuilds the saved shape, then `rebuild(optimizer, scheduler)` makes an
    optimizer for its parameters, before the weights and optimizer state are loaded."""
    import pickle

    import torch
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
        optimizer.load_state_dict(torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True))
        scheduler.load_state_dict(plain["scheduler"])
        _set_rng_state(plain["rng"], tensors)
    except (
        OSError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        pickle.UnpicklingError,
        SafetensorError,
    ) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if isinstance(exc, pickle.UnpicklingError):  # torch's text suggests weights_only=False: no
            reason = f"{OPTIMIZER} holds objects other than tensors and numbers; not loaded"
        raise InputError(
            f"{folder} is damaged or incomplete ({reason}): delete it to start this run over"
        ) from None
    return state, optimizer, scheduler


def _optimizer(model: Any, settings: Settings, total: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and norms) and its linear warmup-decay schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(total * settings.warmup_ratio), total)


def _save_model(model: Any, path: Path) -> None:
    """The trained transformers model (a distillation wrapper's student), shared layers untied;
    written beside `path` and renamed, so a kill mid-write keeps the previous best."""
    from edgeslim.simplify import save_untied

    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    save_untied(getattr(model, "student", model), tmp)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _open_log(work: Path, step: int) -> Any:
    """The eval log, for appending: emptied on a fresh start; on resume, cut back to the
    checkpoint's step (evaluations after it are run, and logged, again)."""
    path = work / LOG
    kept = []
    if step and path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill
    path.write_text("".join(kept), encoding="utf-8")
    return path.open("a", encoding="utf-8")


def _rank_report(
    accel: Any, model: Any, batches: Callable[[int], list[dict[str, Any]]], work: Path
) -> list[dict[str, Any]]:
    """Per process: a digest of the first batch it trained on and of its final weights
    (under DDP the data differ and the weights must agree)."""
    import hashlib

    first = batches(0)[accel.process_index :: accel.num_processes][0]["input_ids"]
    weights = hashlib.sha256()
    for tensor in accel.unwrap_model(model).state_dict().values():
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    mine = {
        "rank": accel.process_index,
        "first_batch": hashlib.sha256(first.numpy().tobytes()).hexdigest()[:16],
        "weights": weights.hexdigest()[:16],
    }
    (work / f".rank{accel.process_index}.json").write_text(json.dumps(mine))
    accel.wait_for_everyone()
    files = sorted(work.glob(".rank*.json"))
    report = [json.loads(f.read_text()) for f in files]
    accel.wait_for_everyone()
    if accel.is_main_process:
        for f in files:
            f.unlink()
    return report


def train(
    model: Any,
    loss_fn: Callable[[Any, dict[str, Any]], tuple[Any, dict[str, float]]],
    batches: Callable[[int], list[dict[str, Any]]],
    evaluate: Callable[[Any], dict[str, float]],
    metric: str,
    work: Path,
    settings: Settings,
    fingerprint: str,
    hook: Any = None,
) -> dict[str, Any]:
    """Train `model` in place; return the best eval, the history and where the best weights are.

    `hook` (e.g. sparsity.Sparsifier) sees every synchronised backward (`after_backward()`) and
    every optimizer step (`after_step(step, total)`, True when it replaced parameters: the
    optimizer is rebuilt and the best so far forgotten); its state_dict() (a flat dict of
    tensors and JSON values) is checkpointed."""
    import torch
    from accelerate import Accelerator

    from edgeslim import ui

    check_precision(settings.precision)
    torch.manual_seed(settings.seed)
    accel = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=settings.grad_accum)
    per_epoch = math.ceil(len(batches(0)) / accel.num_processes)
    total = settings.max_steps or max(1, int(per_epoch * settings.epochs / settings.grad_accum))
    optimizer, scheduler = _optimizer(model, settings, total)
    model, optimizer = accel.prepare(model, optimizer)

    def rebuild(optimizer: Any, scheduler: Any) -> tuple[Any, Any]:
        """A fresh optimizer for a model whose parameters the hook replaced (structured pruning),
        at the same point of the learning-rate schedule."""
        if accel.num_processes > 1:
            raise InputError("pruning while training runs in one process: launch it without DDP")
        fresh, schedule = _optimizer(model, settings, total)
        schedule.load_state_dict(scheduler.state_dict())
        for group, lr in zip(fresh.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
        return accel.prepare(fresh), schedule

    state = LoopState()
    if accel.is_main_process:
        _tidy(work)
    accel.wait_for_everyone()
    found = work / CHECKPOINT if (work / CHECKPOINT).exists() else None
    if found is not None:
        state, optimizer, scheduler = _resume(
            found, fingerprint, accel.unwrap_model(model), optimizer, scheduler, hook, rebuild
        )
        ui.note(f"resuming from step {state.step} ({found})")
    log = _open_log(work, state.step) if accel.is_main_process else open(os.devnull, "w")  # noqa: SIM115
    started, start_step = time.perf_counter(), state.step
    model.train()
    if hook is not None and hook.after_step(state.step, total):  # one-shot schedules act before step 1
        optimizer, scheduler = rebuild(optimizer, scheduler)
    while state.step < total:
        epoch, index = divmod(state.micro, per_epoch)
        order = batches(epoch)[accel.process_index :: accel.num_processes]
        batch = {k: v.to(accel.device) for k, v in order[index % len(order)].items()}
        with accel.accumulate(model):
            loss, parts = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise TrainingFailed(
                    f"loss became {float(loss.detach())} at step {state.step}: lower --lr; the last "
                    f"good checkpoint is in {work}"
                )
            accel.backward(loss)
            if hook is not None and accel.sync_gradients:
                hook.after_backward()
            optimizer.step()
            if accel.sync_gradients:
                scheduler.step()
            optimizer.zero_grad()
        state.micro += 1
        if not accel.sync_gradients:
            continue
        state.step += 1
        if hook is not None and hook.after_step(state.step, total):  # the hook reshaped the model
            optimizer, scheduler = rebuild(optimizer, scheduler)
            state.best, state.bad_evals = None, 0  # the best so far has the old shape: not the output
        state.losses.append(round(float(loss.detach()), 6))
        done = state.step - start_step
        eta = (time.perf_counter() - started) / done * (total - state.step)
        if state.step % 10 == 0 or state.step == total:
            ui.note(
                f"step {state.step}/{total} loss {float(loss.detach()):.4f} "
                + " ".join(f"{k} {v:.4f}" for k, v in parts.items())
                + f" eta {eta:.0f}s"
            )
        if state.step % settings.eval_every == 0 or state.step == total:
            model.eval()
            scores = evaluate(accel.unwrap_model(model))
            model.train()
            log.write(
                json.dumps({"step": state.step, "loss": float(loss.detach()), **parts, **scores}) + "\n"
            )
            log.flush()
            if state.best is None or scores[metric] > state.best[metric]:
                state.best, state.bad_evals = {"step": float(state.step), **scores}, 0
                if accel.is_main_process:
                    _save_model(accel.unwrap_model(model), work / "best")
            else:
                state.bad_evals += 1
            ui.note(
                f"eval at step {state.step}: {metric} {scores[metric]:.4f} (best {state.best[metric]:.4f})"
            )
            if settings.patience is not None and state.bad_evals >= settings.patience:
                ui.note(f"early stop: no {metric} improvement in {settings.patience} evaluations")
                break
        if state.step % settings.save_every == 0 and accel.is_main_process:
            _save(work, accel.unwrap_model(model), optimizer, scheduler, state, fingerprint, hook)
            if os.environ.get("EDGESLIM_FAULT_KILL_AT_STEP") == str(state.step):  # resume tests
                os.kill(os.getpid(), 9)
    log.close()
    ranks = _rank_report(accel, model, batches, work)
    return {
        "ranks": ranks,
        "best": state.best,
        "steps": state.step,
        "losses": state.losses,
        "settings": asdict(settings),
        "processes": accel.num_processes,
    }
