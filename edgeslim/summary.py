"""What a person reads at a glance: a recipe's result beside its teacher, from report.json (and
gate.json): size, latency at every measured cell as a ratio with a 95% CI, the task metric and
the gate verdict. The figures (references, shared cells, latency ratios) are report.py's, which
its side-by-side table uses too."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeslim.errors import InputError
from edgeslim.report import Entry, Report, cells, latency_ratio, ratio_text, references, subject


def _mb(entry: Entry) -> str:
    return f"{entry.size_mb:.1f} MB" if entry.size_mb >= 10 else f"{entry.size_mb:.3g} MB"


def _ms(entry: Entry, cell: str) -> str:
    return f"{entry.latency[cell]['median_ms']:.2f} ms"


def _cell_label(cell: str) -> str:
    """'t1b1s64' -> 't1 b1 s64'."""
    return " ".join(re.findall(r"[a-z]\d+", cell)) or cell


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
