"""What a person reads at a glance: a recipe's result beside its teacher, from report.json (and
gate.json): size, latency at every measured cell as a ratio with a 95% CI, the task metric and
the gate verdict. The report's side-by-side table uses the same figures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeslim.errors import InputError
from edgeslim.report import Entry, Report

# Roles a recipe's report gives its artifacts (steps/report.py, pipeline._report_context).
RESULT, RESULT_FP32 = "result", "result fp32"
TEACHER_FP32, TEACHER_INT8 = "teacher fp32", "teacher int8"


def by_role(report: Report, role: str) -> Entry | None:
    """The first artifact with `role`, or None."""
    return next((e for e in report.artifacts if e.role == role), None)


def subject(report: Report) -> Entry:
    """The artifact the report is about: its recipe's result, else the first one."""
    return by_role(report, RESULT) or report.artifacts[0]


def references(report: Report) -> list[tuple[str, Entry]]:
    """(label, artifact) to compare the result with: the teacher's int8 and fp32, or, in a recipe
    without model steps, the result's own fp32."""
    found = [(role, by_role(report, role)) for role in (TEACHER_INT8, TEACHER_FP32)]
    pairs = [(role, e) for role, e in found if e is not None]
    fp32 = by_role(report, RESULT_FP32)
    return pairs or ([("fp32", fp32)] if fp32 is not None else [])


def cells(report: Report) -> list[str]:
    """Latency cells every artifact has, ordered by batch, sequence, then threads (t1 before t2)."""
    shared = set.intersection(*(set(e.latency) for e in report.artifacts)) if report.artifacts else set()

    def order(cell: str) -> tuple[int, ...]:
        numbers = [int(x) for x in re.findall(r"\d+", cell)]
        return (*numbers[1:], numbers[0]) if len(numbers) == 3 else (0,)

    return sorted(shared, key=order)


def latency_ratio(entry: Entry, reference: Entry, cell: str) -> tuple[float, float | None, float | None]:
    """entry's median latency / reference's at `cell`, with a bootstrap 95% CI from the stored
    samples (None without samples)."""
    a, b = entry.latency[cell], reference.latency[cell]
    if len(a.get("samples_ms", [])) > 1 and len(b.get("samples_ms", [])) > 1:
        import numpy as np

        from edgeslim.bench import ratio_ci

        ratio, low, high = ratio_ci(np.asarray(a["samples_ms"]), np.asarray(b["samples_ms"]))
        return ratio, low, high
    return float(a["median_ms"]) / float(b["median_ms"]), None, None


def _mb(entry: Entry) -> str:
    return f"{entry.size_mb:.1f} MB" if entry.size_mb >= 10 else f"{entry.size_mb:.3g} MB"


def _ms(entry: Entry, cell: str) -> str:
    return f"{entry.latency[cell]['median_ms']:.2f} ms"


def _cell_label(cell: str) -> str:
    """'t1b1s64' -> 't1 b1 s64'."""
    return " ".join(re.findall(r"[a-z]\d+", cell)) or cell


def ratio_text(value: tuple[float, float | None, float | None]) -> str:
    ratio, low, high = value
    return f"{ratio:.2f}x" + (f" (95% CI {low:.2f}-{high:.2f})" if low is not None else "")


def lines(report: Report, gate: dict[str, Any] | None) -> list[str]:
    """The summary block, one line per figure."""
    result, refs = subject(report), references(report)
    rows = [("result", f"{result.name}: {' -> '.join(result.steps)}")]
    versus = [f"{result.size_mb / ref.size_mb:.2f}x {label} ({_mb(ref)})" for label, ref in refs]
    rows.append(("size", _mb(result) + (": " + ", ".join(versus) if versus else "")))
    for cell in cells(report):
        versus = [
            f"{ratio_text(latency_ratio(result, ref, cell))} {label} ({_ms(ref, cell)})"
            for label, ref in refs
        ]
        own = _ms(result, cell)
        rows.append((f"latency {_cell_label(cell)}", own + (": " + ", ".join(versus) if versus else "")))
    metric = report.primary_metric
    if metric and metric in result.metrics:
        versus = [
            f"{result.metrics[metric] - ref.metrics[metric]:+.4f} vs {label} ({ref.metrics[metric]:.4f})"
            for label, ref in refs
            if metric in ref.metrics
        ]
        rows.append((metric, f"{result.metrics[metric]:.4f}" + (": " + ", ".join(versus) if versus else "")))
    rows.append(("gate", _verdict(gate)))
    width = max(len(key) for key, _ in rows)
    return [f"{key.ljust(width)}  {value}" for key, value in rows]


def _verdict(gate: dict[str, Any] | None) -> str:
    """PASS/FAIL with each budget's actual value, from gate.json."""
    if gate is None:
        return "none (no gate.json beside report.json: no gate step ran on this artifact)"
    budgets = gate.get("budgets", [])
    failed = [b for b in budgets if not b.get("passed")]
    detail = ", ".join(f"{b['budget']} {b['actual']} (limit {b['limit']})" for b in failed or budgets)
    word = "PASS" if gate.get("passed") and not failed else f"FAIL ({len(failed)} of {len(budgets)} failed)"
    return f"{word}: {detail}"


def text(directory: Path) -> str:
    """The summary block of the artifact (or report folder) `directory`."""
    from edgeslim import report

    path = directory / "report.json"
    if not path.is_file():
        raise InputError(
            f"{directory} has no report.json: run a recipe with a report step, or 'edgeslim report'"
        )
    parsed = report.read(path)
    if not parsed.artifacts:
        raise InputError(f"{path} lists no artifacts: re-create the report")
    gate = None
    if (directory / "gate.json").is_file():
        try:
            gate = json.loads((directory / "gate.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{directory / 'gate.json'} cannot be read ({exc}): rerun the gate") from None
        if not isinstance(gate, dict) or not isinstance(gate.get("budgets", []), list):
            raise InputError(f"{directory / 'gate.json'} is not an edgeslim gate result: rerun the gate")
    title = f"== edgeslim summary: {directory} (measured {parsed.created}) =="
    return "\n".join([title, *lines(parsed, gate), "=" * len(title)]) + "\n"
