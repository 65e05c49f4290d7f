"""Scale-out: the same finetune command under torchrun with 2 CPU processes (gloo)."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_processes_see_different_data_and_end_equal(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            "-m",
            "edgeslim",
            "finetune",
            str(tiny_factory("bert")),
            "-o",
            str(out),
            "--train-size",
            "128",
            "--eval-size",
            "32",
            "--max-steps",
            "6",
            "--batch-size",
            "8",
            "--eval-every",
            "3",
            "--save-every",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["processes"] == 2
    first, second = record["ranks"]
    assert first["first_batch"] != second["first_batch"]  # each rank trains on its own batches
    assert first["weights"] == second["weights"]  # DDP kept them in step
