"""Fault injection: SIGKILL a command at seeded random moments, then check what it left.

For every kill: the output is either absent or complete (an artifact whose manifest hashes
match its files, a model directory with its record, a JSON/XML file that parses); the rerun
of the same command succeeds and sweeps the temporaries; a deterministic step's rerun is
byte-identical (every file but the manifest) to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

RUN = "import sys; from edgeslim.cli import main; sys.argv = ['edgeslim'] + sys.argv[1:]; main()"
RECORDS = ("edgeslim-train.json", "edgeslim-prune.json", "edgeslim-simplify.json", "report.json")


@dataclass
class Case:
    """One command; OUT in `args` stands for the output path (a directory or a file)."""

    name: str
    args: list[str]
    output: str = "dir"  # "dir" (artifact or model directory), "json", "xml" or "none"
    deterministic: bool = True
    checkpoints: tuple[int, ...] = ()  # training: its checkpoint steps; also killed at one of them
    kills: list[dict[str, object]] = field(default_factory=list)


def _start(case: Case, out: Path, kill_at_step: int | None = None) -> subprocess.Popen[str]:
    args = [str(out) if a == "OUT" else a for a in case.args]
    env = dict(os.environ)
    if kill_at_step is not None:  # the trainer SIGKILLs itself right after this step
        env["EDGESLIM_FAULT_KILL_AT_STEP"] = str(kill_at_step)
    return subprocess.Popen(
        [sys.executable, "-c", RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    return err


def contents(case: Case, out: Path) -> object:
    """What a finished output holds (None when absent); raises when it is half-written."""
    if case.output == "none" or not out.exists():
        return None
    if case.output == "json":
        return sorted(json.loads(out.read_text()))
    if case.output == "xml":
        return ET.parse(out).getroot().tag
    from edgeslim import artifacts

    if (out / artifacts.MANIFEST).exists():
        recorded = artifacts.read_manifest(out)["files"]
        assert recorded == artifacts.file_hashes(out), f"{out}: files differ from its manifest"
        return recorded
    assert any((out / name).exists() for name in RECORDS), f"{out}: an output without its record"
    return artifacts.file_hashes(out)


def sweep(case: Case, work: Path, seed: int, kills: int) -> Case:
    """Run `case` whole once, then kill it `kills` times at seeded moments and rerun each.

    Each run writes `work/<run>/out` (a recipe's cache lies beside it, so runs share nothing).
    """
    reference = work / "reference" / "out"
    reference.parent.mkdir(parents=True)
    began = time.monotonic()
    proc = _start(case, reference)
    first_write = _first_write(proc, reference)
    _finish(proc)
    whole = time.monotonic() - began
    expected = contents(case, reference)
    rng = random.Random(seed)
    for index in range(kills):
        # Seconds after the kill run's own first temporary (else after 30% of the whole run:
        # past the imports). Timing from the run itself, not from the reference, because a
        # warm second run can be faster; a run that finished (or had written its output) first is
        # retried with half the delay, so a recorded kill lands mid-work whenever it can.
        start = first_write if first_write is not None else 0.3 * whole
        delay = rng.uniform(0.0, max(whole - start, 0.1))
        for attempt in range(4):
            out = work / f"k{index}.{attempt}" / "out"
            out.parent.mkdir(parents=True)
            proc = _start(case, out)
            began = time.monotonic()
            if first_write is None:
                time.sleep(start)
            elif _first_write(proc, out) is None:
                delay = 0.0
            time.sleep(delay)
            moment = time.monotonic() - began
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            left = contents(case, out)  # absent or complete, never half-written
            # a kill after the output was complete (the interpreter still exiting) tests little
            if (killed and left is None) or attempt == 3:
                break
            delay /= 2
        partial = out.parent / ".out.partial"
        checkpoint = (partial / "checkpoint").exists() or (partial / "recovery" / "checkpoint").exists()
        if left is None:
            err = _finish(_start(case, out))
            assert not checkpoint or "resuming from step" in err, f"{case.name}: did not resume"
        scratch = list(Path(tempfile.gettempdir()).glob(f"edgeslim-{proc.pid}-*"))
        assert not scratch, f"{case.name}: the killed run's scratch folders were not swept: {scratch}"
        if case.output == "none":
            assert sorted(p.name for p in out.parent.iterdir()) == [], f"{case.name} wrote files"
        if case.deterministic and case.output == "dir":
            assert contents(case, out) == expected, f"{case.name}: rerun after a kill differs"
        stray = [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")]
        assert stray == [], f"{case.name}: left {stray}"
        case.kills.append(
            {
                "at_s": round(moment, 2),
                "killed": killed,
                "resumed": checkpoint,
                "output_after_kill": left is not None,
            }
        )
    if case.checkpoints:
        _kill_at_step(case, work, rng.choice(case.checkpoints), expected)
    return case


def _kill_at_step(case: Case, work: Path, step: int, expected: object) -> None:
    """Kill a training step right after its checkpoint at `step`: the rerun resumes from it."""
    out = work / f"step{step}" / "out"
    out.parent.mkdir(parents=True)
    proc = _start(case, out, kill_at_step=step)
    proc.communicate(timeout=900)
    assert proc.returncode == -signal.SIGKILL and contents(case, out) is None, f"{case.name}: not killed"
    err = _finish(_start(case, out))
    assert "resuming from step" in err, f"{case.name}: did not resume after a kill at step {step}"
    if case.deterministic:
        assert contents(case, out) == expected, f"{case.name}: resumed run differs"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")] == []
    case.kills.append({"at_step": step, "killed": True, "resumed": True, "output_after_kill": False})


def _first_write(proc: subprocess.Popen[str], out: Path) -> float | None:
    """Seconds until the command first writes anything beside its output (its temporary)."""
    began = time.monotonic()
    while proc.poll() is None:
        if any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir()):
            return time.monotonic() - began
        time.sleep(0.01)
    return None
