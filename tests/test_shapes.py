import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import cli

from edgeslim import shapes as logic
from edgeslim.config import make_config
from edgeslim.errors import InputError
from edgeslim.shapes import Grid, Shape
from edgeslim.steps import shapes
from edgeslim.steps.shapes import Config

TINY = Shape(layers=2, hidden=32, heads=4, ffn=37)  # conftest's tiny models
GRID = {"layers": (1, 2, 3), "heads": (4, 3), "ffn": (16, 37)}
TIMING = {"seq": 16, "runs": 3}


def _fake_timer(medians: dict[str, float]) -> shapes.Timer:
    """A timer returning the given medians (ms) by shape name ("teacher" too), recording the
    models it was handed."""

    def timer(paths: dict[str, Path], cfg: Config) -> dict[str, Any]:
        timer.seen = dict(paths)  # type: ignore[attr-defined]
        base = medians[shapes.TEACHER]
        cells = [
            {
                "model": name,
                "median_ms": medians[name],
                "p90_ms": medians[name] * 1.1,
                "runs": cfg.runs,
                "speedup_vs_baseline": round(base / medians[name], 3),
                "speedup_ci95": [round(0.9 * base / medians[name], 3), round(1.1 * base / medians[name], 3)],
            }
            for name in paths
        ]
        return {"cells": cells}

    return timer


def test_config_rejects_unknown_keys_empty_grids_and_no_target() -> None:
    with pytest.raises(InputError, match="unknown key 'layerz'.*did you mean 'layers'"):
        make_config(Config, layerz=(2,), latency_ms=5)
    with pytest.raises(InputError, match="layers"):
        make_config(Config, layers=(), latency_ms=5)  # an empty list is not "the teacher's"
    with pytest.raises(InputError, match="grid is empty"):
        make_config(Config, latency_ms=5)
    with pytest.raises(InputError, match="latency target"):
        make_config(Config, layers=(2,))
    with pytest.raises(InputError, match="heads or head_dim"):
        make_config(Config, heads=(4,), head_dim=(8,), speedup=2)
    with pytest.raises(InputError, match="greater than 0"):
        make_config(Config, hidden=(0, 32), speedup=2)
    assert make_config(Config, ffn_ratio=(2.0,), speedup=2).produces_model is False
    assert make_config(Config, layers=(1,), speedup=2, distill_steps=4).produces_model is True
    for args in (["--layers", "a,b", "--latency-ms", "5"], ["--layers", "1"], ["--latency-ms", "5"]):
        result = cli(["shapes", "minilm", "-o", "unused", *args])
        assert result.exit_code == 3, result.output


def test_candidates_skip_invalid_combinations_with_a_note() -> None:
    valid, skipped = logic.candidates(Grid(**GRID), TINY)
    assert [s.name for s in valid] == ["L1-H32-A4-F16", "L1-H32-A4-F37", "L2-H32-A4-F16", "L2-H32-A4-F37"]
    notes = {s["name"]: s["note"] for s in skipped}
    assert len(skipped) == 8
    assert notes["L1-H32-A3-F16"] == "hidden 32 is not divisible by 3 heads"
    assert notes["L3-H32-A4-F37"] == "larger than the teacher (layers 3 > 2)"
    # head widths and FFN ratios: heads = hidden / head_dim, FFN = ratio x hidden
    valid, skipped = logic.candidates(Grid(hidden=(16, 20, 32), head_dim=(8,), ffn_ratio=(2.0,)), TINY)
    assert valid == [Shape(2, 16, 2, 32)]  # hidden 32 gives FFN 64 > the teacher's 37
    notes = [s["note"] for s in skipped]
    assert notes == ["hidden 20 is not divisible by head_dim 8", "larger than the teacher (ffn 64 > 37)"]


def _row(name: str, ms: float, mb: float, encoder: int, teacher_ms: float = 4.0) -> dict[str, Any]:
    return {
        "name": name,
        "median_ms": ms,
        "size_mb": mb,
        "encoder_parameters": encoder,
        "speedup": teacher_ms / ms,
    }


def test_filter_and_pareto_use_the_measured_numbers() -> None:
    rows = [
        _row("small-slow", 3.0, 1.0, 100),
        _row("smaller-slower", 3.5, 0.9, 90),  # dominated: small-slow is faster and larger
        _row("big-fast", 2.0, 3.0, 300),
        _row("huge-over", 6.0, 5.0, 500),  # the most capacity, but over the target
    ]
    chosen = logic.select(rows, latency_ms=4.0, speedup=None, keep=5, order="pareto")
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows if r["kept"]] == ["small-slow", "smaller-slower", "big-fast"]
    assert {r["name"] for r in rows if r["front"]} == {"big-fast"}  # faster and larger than both
    assert not by_name["huge-over"]["front"]  # the front is taken over the kept shapes only
    rows[0]["encoder_parameters"] = 400  # now small-slow buys more capacity for its latency
    chosen = logic.select(rows, latency_ms=4.0, speedup=None, keep=5, order="pareto")
    assert {r["name"] for r in rows if r["front"]} == {"small-slow", "big-fast"}
    assert [r["name"] for r in chosen] == ["small-slow", "big-fast", "smaller-slower"]  # front, most first
    fastest = logic.select(rows, latency_ms=4.0, speedup=None, keep=2, order="fastest")
    assert [r["name"] for r in fastest] == ["big-fast", "small-slow"]
    logic.select(rows, latency_ms=None, speedup=1.3, keep=5, order="pareto")  # 4.0 / ms >= 1.3
    assert [r["name"] for r in rows if r["kept"]] == ["small-slow", "big-fast"]
    scored = [{**r, "accuracy": a} for r, a in zip(rows[:3], (0.80, 0.85, 0.82), strict=True)]
    front = logic.pareto(scored, logic.QUALITY)
    assert [r["name"] for r in front] == ["big-fast", "small-slow", "smaller-slower"]
    scored[1]["accuracy"] = 0.79  # smaller-slower: slower, less accurate than small-slow, but smaller
    assert len(logic.pareto(scored, logic.QUALITY)) == 3
    scored[1]["size_mb"] = 1.0  # now not even smaller: dominated
    assert [r["name"] for r in logic.pareto(scored, logic.QUALITY)] == ["big-fast", "small-slow"]
    assert logic.best(scored)["name"] == "big-fast"  # type: ignore[index]


DISTILL = {"distill_steps": 4, "keep": 2, "train_size": 64, "eval_size": 32, "batch_size": 16}


@pytest.fixture(scope="module")
def timed(tiny_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real run on the tiny classifier: every candidate built as int8 and timed (3 runs),
    two of them distilled (4 steps) and scored."""
    seen: dict[str, Any] = {}

    def timer(paths: dict[str, Path], cfg: Config) -> dict[str, Any]:
        seen.update(paths=dict(paths), result=shapes.measure(paths, cfg))
        return seen["result"]  # type: ignore[no-any-return]

    out = tmp_path_factory.mktemp("shapes") / "out"
    out.mkdir()
    summary = shapes.run(
        str(tiny_factory("bert", "seq", 2)),
        # a ceiling no run reaches (1,000 s): the filter itself is tested on injected timings above
        make_config(Config, latency_ms=1e6, **GRID, **TIMING, **DISTILL),
        out,
        timer,
    )
    return {"out": out, "summary": summary, **seen}


def test_every_valid_candidate_is_timed_and_sized(timed: dict[str, Any]) -> None:
    result = json.loads((timed["out"] / "shapes.json").read_text())
    rows = result["candidates"]
    assert [r["name"] for r in rows] == ["L1-H32-A4-F16", "L1-H32-A4-F37", "L2-H32-A4-F16", "L2-H32-A4-F37"]
    assert set(timed["paths"]) == {"teacher", *(r["name"] for r in rows)}
    cells = {c["model"]: c for c in timed["result"]["cells"]}
    assert all(c["runs"] == 3 and c["median_ms"] > 0 for c in cells.values())
    assert all(r["median_ms"] == cells[r["name"]]["median_ms"] for r in rows)  # the table is the measurement
    assert [r["parameters"] for r in rows] == sorted(
        r["parameters"] for r in rows
    )  # grid order is size order
    assert all(0 < r["encoder_parameters"] < r["parameters"] for r in rows)
    assert [r["size_mb"] for r in rows] == sorted(r["size_mb"] for r in rows)
    assert len({r["size_mb"] for r in rows}) == 4
    teacher = result["reference"]
    assert rows[-1]["parameters"] == teacher["parameters"]  # the teacher's own shape
    assert abs(rows[-1]["size_mb"] - teacher["size_mb"]) < 0.002
    assert len(result["skipped"]) == 8 and all(r["kept"] for r in rows)  # under the ceiling: all kept
    assert timed["summary"]["kept"] == 4 and "budget_not_met" not in timed["summary"]
    md = (timed["out"] / "shapes.md").read_text()
    assert "L2-H32-A4-F37" in md and "hidden 32 is not divisible by 3 heads" in md
    assert (timed["out"] / "shapes.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((timed["out"] / shapes.RECORD).read_text())
    assert record["type"] == "shapes" and record["cpu"]["model"] and len(record["teacher"]["sha256"]) == 64


def test_kept_shapes_are_distilled_scored_and_the_most_accurate_is_the_output(
    timed: dict[str, Any], tmp_path: Path
) -> None:
    out, result = timed["out"], json.loads((timed["out"] / "shapes.json").read_text())
    rows = result["candidates"]
    order = sorted(rows, key=lambda r: (not r["front"], -r["encoder_parameters"], r["median_ms"]))
    scored = [r for r in rows if "accuracy" in r]
    assert {r["name"] for r in scored} == {r["name"] for r in order[:2]}  # keep 2, the front first
    assert all(r["metric"] == "accuracy" and 0 <= r["accuracy"] <= 1 for r in scored)
    chosen = max(scored, key=lambda r: (r["accuracy"], -r["median_ms"]))
    assert result["chosen"] == chosen["name"] and timed["summary"]["chosen"].startswith(chosen["name"])
    config = json.loads((out / "config.json").read_text())  # the output is the chosen student
    shape = (config["num_hidden_layers"], config["intermediate_size"])
    assert shape == (chosen["shape"]["layers"], chosen["shape"]["ffn"])
    assert not (out / "students").exists() and (out / "edgeslim-train.json").is_file()
    exported = cli(["export", str(out), "--task", "sequence-classification", "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output  # the next recipe step can take it


def test_shapes_distill_cannot_build_are_skipped(tiny_factory: Callable[..., Path]) -> None:
    from edgeslim import models

    teacher = tiny_factory("bert", "seq", 2)
    grid = {"layers": (1,), "hidden": (16, 32), "heads": (2, 4), "ffn": (16,)}
    config = models.read_config(teacher)
    timing_only = shapes.plan(make_config(Config, latency_ms=5, **grid), config, "sequence-classification")
    assert len(timing_only[0]) == 4 and not timing_only[1]  # any shape can be timed
    valid, skipped = shapes.plan(
        make_config(Config, latency_ms=5, **grid, **DISTILL), config, "sequence-classification"
    )
    # 2 heads at hidden 32 are 16 wide, wider than the teacher's 8: distill copies a subset of them
    assert [s.name for s in valid] == ["L1-H16-A2-F16", "L1-H16-A4-F16", "L1-H32-A4-F16"]
    assert skipped[0]["name"] == "L1-H32-A2-F16" and "wider than the teacher" in skipped[0]["note"]
    embedding = shapes.plan(
        make_config(Config, latency_ms=5, **grid, **DISTILL), config, "feature-extraction"
    )
    assert [s.name for s in embedding[0]] == [] and len(embedding[1]) == 4


def test_run_keeps_by_injected_timings(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    grid = {"layers": (1, 2), "ffn": (16,), **TIMING}
    medians = {"teacher": 4.0, "L1-H32-A4-F16": 3.0, "L2-H32-A4-F16": 5.0}
    out = tmp_path / "out"
    out.mkdir()
    summary = shapes.run(
        str(tiny_factory("bert", "seq", 2)),
        make_config(Config, speedup=1.2, **grid),
        out,
        _fake_timer(medians),
    )
    rows = {r["name"]: r for r in json.loads((out / "shapes.json").read_text())["candidates"]}
    assert rows["L1-H32-A4-F16"]["kept"] and rows["L1-H32-A4-F16"]["front"]
    assert rows["L1-H32-A4-F16"]["speedup"] == pytest.approx(4.0 / 3.0, abs=1e-3)
    assert not rows["L2-H32-A4-F16"]["kept"]  # 0.8x the teacher: below the 1.2x target
    assert summary["kept"] == 1 and summary["pareto"].startswith("L1-H32-A4-F16 3.0 ms")
    assert not (out / "config.json").exists()  # timing only: a report, not a model
    result = json.loads((out / "shapes.json").read_text())
    result["candidates"] = [{**r, "kept": False} for r in result["candidates"]]
    none = shapes.summarize(result, make_config(Config, speedup=1.2, **grid))
    assert none["kept"] == 0 and "relax the target" in none["budget_not_met"]
