"""Fault injection, fast representative (the full sweep is tests/test_faults_slow.py)."""

from pathlib import Path

from faults import Case, sweep


def test_sigkill_during_export_leaves_nothing_half_written(tiny_bert: Path, tmp_path: Path) -> None:
    case = sweep(Case("export", ["export", str(tiny_bert), "-o", "OUT"]), tmp_path, seed=0, kills=2)
    assert len(case.kills) == 2
    # at least one kill landed mid-work (no output left); the sweep itself checked the rest
    assert any(kill["killed"] and not kill["output_after_kill"] for kill in case.kills), case.kills
