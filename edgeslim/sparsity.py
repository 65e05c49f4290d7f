"""Unstructured pruning during training: magnitude or movement scores, with a one-shot or
cubic sparsity schedule, applied to every encoder Linear weight.

- magnitude: keep the largest |W| of each matrix.
- movement (Sanh, Wolf & Rush 2020, "Movement Pruning"): keep the weights whose first-order
  score S = -sum_t dL/dW * W (accumulated after every optimizer step's backward) is largest,
  i.e. the weights that training moves away from zero.
- cubic schedule (Zhu & Gupta 2017): sparsity rises from 0 at `begin` to the target at `end`
  (fractions of the run) as s_t = s_f * (1 - (1 - p)^3); masks are monotonic (a pruned weight
  stays pruned) and re-applied after every step so the optimizer cannot revive it.

Hand-written because neither transformers nor accelerate prune during training, and
torch.nn.utils.prune reparametrises modules (weight_orig + mask), which the ONNX export and
save_pretrained would then carry. onnxruntime's CPU kernels do not skip zeros: the gain is
compressed size, not speed (remove whole rows/columns with structured pruning for speed).
"""

from __future__ import annotations

from typing import Any

import torch

UPDATE_EVERY = 10  # steps between mask updates while the sparsity rises


def encoder_linears(model: Any) -> dict[str, torch.Tensor]:
    """name -> weight of every Linear inside the encoder blocks (what is sparsified)."""
    from edgeslim.pruning import blocks, check_supported

    check_supported(model)
    found = {}
    for i, block in enumerate(blocks(model)):
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                found[f"layer{i}.{name}"] = module.weight
    return found


def cubic(step: int, total: int, target: float, begin: float, end: float) -> float:
    """Sparsity at `step` of `total` on the cubic schedule."""
    first, last = int(begin * total), max(int(begin * total) + 1, int(end * total))
    if step <= first:
        return 0.0
    progress = min(1.0, (step - first) / (last - first))
    return target * (1 - (1 - progress) ** 3)


class Sparsifier:
    """Trainer hook: scores after backward, masks after the optimizer step."""

    def __init__(
        self,
        model: Any,
        target: float,
        method: str = "magnitude",
        schedule: str = "cubic",
        begin: float = 0.1,
        end: float = 0.7,
    ) -> None:
        self.weights = encoder_linears(model)
        self.target, self.method, self.schedule = target, method, schedule
        self.begin, self.end = begin, end
        self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in self.weights.items()}
        self.scores = (
            {n: torch.zeros_like(w) for n, w in self.weights.items()} if method == "movement" else {}
        )
        self.level = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "schedule": self.schedule,
            "begin": self.begin,
            "end": self.end,
        }

    def after_backward(self) -> None:
        """Accumulate movement scores from the (synchronised) gradients."""
        with torch.no_grad():
            for name, score in self.scores.items():
                weight = self.weights[name]
                if weight.grad is not None:
                    score.sub_(weight.grad * weight)

    def wanted(self, step: int, total: int) -> float:
        if self.schedule == "oneshot":
            return self.target
        return cubic(step, total, self.target, self.begin, self.end)

    def after_step(self, step: int, total: int) -> None:
        """Raise the sparsity when the schedule says so, then zero the pruned weights."""
        level = self.wanted(step, total)
        due = step % UPDATE_EVERY == 0 or level >= self.target
        if level > self.level and due:
            self._update(level)
        with torch.no_grad():
            for name, weight in self.weights.items():
                weight.mul_(self.masks[name])

    def _update(self, level: float) -> None:
        with torch.no_grad():
            for name, weight in self.weights.items():
                score = self.scores[name] if self.method == "movement" else weight.abs()
                score = score.masked_fill(~self.masks[name], float("-inf"))
                keep = weight.numel() - int(weight.numel() * level)
                top = score.flatten().topk(keep).indices
                mask = torch.zeros(weight.numel(), dtype=torch.bool)
                mask[top] = True
                self.masks[name] = mask.view_as(weight) & self.masks[name]
        self.level = level

    def report(self) -> dict[str, float]:
        """Measured sparsity (zeros / weights) per encoder layer."""
        zeros: dict[str, list[int]] = {}
        for name, weight in self.weights.items():
            layer = name.split(".")[0]
            counts = zeros.setdefault(layer, [0, 0])
            counts[0] += int((weight == 0).sum())
            counts[1] += weight.numel()
        return {layer: round(z / t, 4) for layer, (z, t) in zeros.items()}

    def state_dict(self) -> dict[str, Any]:
        """Flat: tensors (masks, scores) and plain numbers, so a checkpoint needs no pickle."""
        state: dict[str, Any] = {f"masks.{n}": m for n, m in self.masks.items()}
        state |= {f"scores.{n}": s for n, s in self.scores.items()}
        return {**state, "level": self.level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned; KeyError/ValueError when it does not fit this model."""
        masks = {n: state[f"masks.{n}"].to(torch.bool) for n in self.weights}
        scores = {n: state[f"scores.{n}"] for n in self.scores}
        for name, weight in self.weights.items():
            if masks[name].shape != weight.shape or (name in scores and scores[name].shape != weight.shape):
                raise ValueError(f"sparsity state of {name} does not match the model's shape")
        self.masks, self.scores, self.level = masks, scores, float(state["level"])
