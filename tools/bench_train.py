"""Distillation step time: edgeslim's loop (accelerate, distillation loss, scheduler,
logging) vs a minimal plain PyTorch loop on the same shapes, one run, same process.

MiniLM teacher (6 layers) -> 3-layer student, batch 32 x seq 64, KL + hidden-state loss.

    .venv/bin/python tools/bench_train.py [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgeslim import models
from edgeslim.train import loop, losses, students
from edgeslim.train.config import Weights


def batches(n: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (n, batch, seq), generator=g)
    return [
        {
            "input_ids": ids[i],
            "attention_mask": torch.ones_like(ids[i]),
            "token_type_ids": torch.zeros_like(ids[i]),
            "labels": torch.randint(0, 2, (batch,), generator=g),
        }
        for i in range(n)
    ]


def plain(teacher: torch.nn.Module, student: torch.nn.Module, data: list[dict[str, torch.Tensor]]) -> float:
    """Seconds for the steps: forward both, KL + hidden MSE, backward, AdamW step."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-5)
    mapping = [1, 3, 5]
    start = time.perf_counter()
    for batch in data:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True)
        s = student(**inputs, output_hidden_states=True)
        loss = losses.soft_kl(s.logits, t.logits, 2.0)
        for i, j in enumerate(mapping):
            loss = loss + losses.hidden_mse(
                s.hidden_states[i + 1], t.hidden_states[j + 1], inputs["attention_mask"]
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def ours(teacher: torch.nn.Module, student: torch.nn.Module, data: list[dict[str, torch.Tensor]]) -> float:
    wrapper = students.Student(student, teacher.config.hidden_size, 3)
    loss_fn = losses.make_loss(teacher, Weights(kl=1.0, hidden=1.0), [1, 3, 5], "sequence-classification")
    settings = loop.Settings(
        max_steps=len(data), epochs=1, batch_size=32, lr=5e-5, seed=0, eval_every=10**6, save_every=10**6
    )
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        loop.train(
            wrapper,
            loss_fn,
            lambda epoch: [dict(b) for b in data],
            lambda m: {"accuracy": 0.0},
            "accuracy",
            Path(work),
            settings,
            "bench",
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = models.load(models.resolve("minilm"), "sequence-classification", labels=["0", "1"]).eval()
    data = batches(args.steps, 32, 64)
    times: dict[str, list[float]] = {"plain": [], "edgeslim": []}
    for _ in range(args.reps):  # interleaved; fresh students so both do the same work
        times["plain"].append(plain(teacher, students.reduce_layers(teacher, [1, 3, 5]).train(), data))
        times["edgeslim"].append(ours(teacher, students.reduce_layers(teacher, [1, 3, 5]).train(), data))
    per_step = {k: statistics.median(v) / args.steps for k, v in times.items()}
    print(f"| loop | s/step (median of {args.reps} x {args.steps} steps) |\n|---|---:|")
    for name, value in per_step.items():
        print(f"| {name} | {value:.3f} |")
    print(
        f"\nratio edgeslim / plain: {per_step['edgeslim'] / per_step['plain']:.3f}x "
        f"(eval at the end of the edgeslim run included)"
    )


if __name__ == "__main__":
    main()
