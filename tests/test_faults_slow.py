"""Fault injection in every step: SIGKILL at seeded random moments (pytest -m slow).

Prints one line per case; the README's Reliability section quotes a run of it.
"""

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TRAIN_FAST
from faults import Case, sweep

KILLS = 3
EVERY_4 = tuple(range(8, 48, 4))  # finetune/distill checkpoints (--save-every 4, 48 steps)
RECOVERY = (12, 24, 36)  # recovery checkpoints every min(100, 48 // 4) steps


def _cases(tiny: Path, seq: Path, fused: Path, work: Path) -> list[Case]:
    budgets = work / "budgets.yaml"
    # the gate times the model (kills land mid-timing) against itself, interleaved: a ratio
    # whose CI cannot reach 10x on any CPU, so its verdict is not a timing threshold
    budgets.write_text(
        "max_size_mb: 100\nmax_params: 100000000\n"
        f"latency:\n  - {{ep: cpu, threads: 1, batch: 1, seq: 32, max_ratio: 10.0, versus: {fused}}}\n"
    )
    recipe = work / "recipe.yaml"
    recipe.write_text(
        f"name: faults\nmodel: {tiny}\noutput: OUT\nsteps:\n  - type: export\n  - type: optimize\n"
        "  - type: quantize\n    mode: static\n    calib_size: 64\n"
    )
    recover = [
        "--recover-with",
        str(seq),
        "--recover-steps",
        "48",
        "--data",
        "sst2:train",
        "--eval",
        "sst2:dev",
    ]
    return [
        Case("export", ["export", str(tiny), "-o", "OUT"]),
        Case("optimize", ["optimize", str(fused.parent / "bert-fp32"), "-o", "OUT"]),
        Case("quantize dynamic", ["quantize", str(fused), "-o", "OUT"]),
        Case(
            "quantize static (calibration)",
            ["quantize", str(fused), "--mode", "static", "-o", "OUT"],
        ),
        Case(
            "finetune",
            ["finetune", str(seq), *TRAIN_FAST, "--max-steps", "48", "-o", "OUT"],
            checkpoints=EVERY_4,
        ),
        Case(
            "distill",
            [
                "distill",
                "--teacher",
                str(seq),
                "--student-layers",
                "1",
                *TRAIN_FAST,
                "--max-steps",
                "48",
                "-o",
                "OUT",
            ],
            checkpoints=EVERY_4,
        ),
        Case(
            "prune + recovery",
            ["prune", str(seq), "--ffn", "0.5", *recover, "-o", "OUT"],
            checkpoints=RECOVERY,
        ),
        Case(
            "simplify + recovery",
            ["simplify", str(seq), "--activation", "relu", *recover, "-o", "OUT"],
            checkpoints=RECOVERY,
        ),
        Case("eval", ["eval", str(fused), "--data", "stsb:dev", "--limit", "200"], output="none"),
        Case(
            "bench",
            [
                "bench",
                str(fused),
                "--runs",
                "20000",
                "--time-budget",
                "2",
                "--seq",
                "32",
                "--threads",
                "1",
                "--out",
                "OUT",
            ],
            output="json",
            deterministic=False,
        ),
        Case("report", ["report", str(fused), "-o", "OUT"], deterministic=False),
        Case("gate", ["gate", str(fused), "--budgets", str(budgets), "--junit", "OUT"], output="xml"),
        Case("recipe run", ["run", str(recipe), "-o", "OUT"]),
    ]


NAMES = [
    "export",
    "optimize",
    "quantize dynamic",
    "quantize static (calibration)",
    "finetune",
    "distill",
    "prune + recovery",
    "simplify + recovery",
    "eval",
    "bench",
    "report",
    "gate",
    "recipe run",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sigkill_at_random_moments(
    name: str, tiny_factory: Callable[..., Path], bert_fused: Path, tmp_path: Path
) -> None:
    tiny, seq = tiny_factory("bert"), tiny_factory("bert", "seq", 2)
    cases = {case.name: case for case in _cases(tiny, seq, bert_fused, tmp_path)}
    assert list(cases) == NAMES
    done = sweep(cases[name], tmp_path / "work", seed=NAMES.index(name), kills=KILLS)
    kills = len(done.kills)
    killed = sum(bool(k["killed"]) for k in done.kills)
    resumed = sum(bool(k["resumed"]) for k in done.kills)
    moments = [f"{k['at_s']} s" if "at_s" in k else f"step {k['at_step']}" for k in done.kills]
    print(f"\n{name}: {killed}/{kills} killed mid-run at {moments}, {resumed} resumed from a checkpoint")
