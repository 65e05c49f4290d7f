"""The training loop shared by finetune and distill, on accelerate (one process, or N under
`accelerate launch` / `torchrun`: each rank takes every N-th batch, DDP averages gradients).

Resumable: every `save_every` steps the whole state is checkpointed (train/checkpoint.py).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeslim import hardware
from edgeslim.errors import EdgeslimError, InputError
from edgeslim.hardware import Target
from edgeslim.train.checkpoint import CHECKPOINT, LoopState, resume, save, tidy

LOG = "train_log.jsonl"
# loss_fn(model, batch) -> (loss tensor, {term: value} to log)
LossFn = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, float]]]


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
    from edgeslim.models import save_untied

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
    loss_fn: LossFn,
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
        tidy(work)
    accel.wait_for_everyone()
    found = work / CHECKPOINT if (work / CHECKPOINT).exists() else None
    if found is not None:
        state, optimizer, scheduler = resume(
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
            save(work, accel.unwrap_model(model), optimizer, scheduler, state, fingerprint, hook)
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
