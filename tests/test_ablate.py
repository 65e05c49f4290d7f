"""tools/ablate.py: every arm of sst2-edge is a valid recipe that differs from the base arm in
its lever only; the paired difference and its interval."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgeslim.recipe import load

ROOT = Path(__file__).parents[1]


def _tool() -> Any:
    path = ROOT / "tools" / "ablate.py"
    spec = importlib.util.spec_from_file_location("edgeslim_tools_ablate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ablate: Any = _tool()
RECIPE = yaml.safe_load((ROOT / "recipes" / "sst2-edge.yaml").read_text())


def _changed(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths where two parsed recipes differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in _changed(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _changed(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


@pytest.mark.parametrize("arm", list(ablate.ARMS))
def test_each_arm_is_a_valid_recipe_changing_its_lever_only(arm: str, tmp_path: Path) -> None:
    spec = ablate.arm_recipe(RECIPE, arm, "teacher", 40, tmp_path)
    path = tmp_path / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(spec))
    recipe = load(path)  # validated: unknown keys and bad values are refused
    assert [s.type for s in recipe.steps] == list(ablate.KEPT)  # type: ignore[attr-defined]
    distill = next(s for s in spec["steps"] if s["type"] == "distill")
    assert distill["eval_every"] == distill["max_steps"]
    base = ablate.arm_recipe(RECIPE, "base", "teacher", 40, tmp_path)
    changed = [p for p in _changed(base["steps"], spec["steps"])]
    expected = {
        "base": [],
        "longer": ["[0].eval_every", "[0].max_steps", "[0].save_every"],
        "augment": ["[0].augment"],
        "attention": ["[0].losses.attention"],
        "no-hidden": ["[0].losses.hidden"],
        "no-prune": ["[0].prune_ffn"],
        "three-layers": ["[0].student_layers"],
        "static": ["[4].calib", "[4].calib_size", "[4].eval", "[4].eval_size", "[4].max_drop", "[4].mode"],
    }[arm]
    assert changed == expected
    assert RECIPE["steps"][1]["max_steps"] == 3000  # the recipe itself is left alone


def test_unknown_arm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown arm 'fast'"):
        ablate.arm_recipe(RECIPE, "fast", "teacher", 40, tmp_path)


def test_paired_difference() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(800) < 0.8).astype(float)
    same = ablate.paired_difference(base, base)
    assert same == {"points": 0.0, "ci95": [0.0, 0.0]}  # paired: identical answers, no spread
    better = base.copy()
    better[np.flatnonzero(base == 0)[:40]] = 1  # 40 more right of 800: +5 pt
    d = ablate.paired_difference(better, base)
    assert d["points"] == 5.0
    assert 0 < d["ci95"][0] < 5.0 < d["ci95"][1]


def _table(tmp_path: Path, name: str, arms: dict[str, Any]) -> None:
    head = {"schema": ablate.SCHEMA, "model": "t", "steps": 40, "data": "sst2:dev", "n": 4}
    (tmp_path / f"{name}.json").write_text(json.dumps({**head, "arms": arms}))


def test_merge_joins_tables_and_pairs_each_arm_with_base(tmp_path: Path) -> None:
    base = {"change": "b", "wall_s": 1, "accuracy": 0.5, "ci95": [0, 1], "mb": 1.0, "correct": "0101"}
    _table(
        tmp_path,
        "part1",
        {
            "base": {"change": "b", "wall_s": 1, "error": "exit 4"},
            "longer": {
                "change": "l",
                "wall_s": 2,
                "accuracy": 1.0,
                "ci95": [1, 1],
                "mb": 1.0,
                "correct": "1111",
            },
        },
    )
    _table(
        tmp_path,
        "part2",
        {
            "base": base,
            "static": {
                "change": "s",
                "wall_s": 3,
                "accuracy": 0.5,
                "ci95": [0, 1],
                "mb": 2.0,
                "correct": "0101",
            },
        },
    )
    merged = ablate.merge(tmp_path)
    assert list(merged["arms"]) == ["base", "longer", "static"]  # the scored base wins over the failed one
    assert merged["arms"]["longer"]["vs_base"]["points"] == 50.0
    assert merged["arms"]["static"]["vs_base"] == {"points": 0.0, "ci95": [0.0, 0.0]}
    assert "| longer | l | 1.00 | 1.0000 [1.0000, 1.0000] | +50.00" in ablate.table(merged)
    _table(tmp_path, "other", {"base": {**base, "correct": "1111"}})
    (tmp_path / "other.json").write_text(
        (tmp_path / "other.json").read_text().replace('"steps": 40', '"steps": 9')
    )
    with pytest.raises(SystemExit, match="differ in model, steps or data"):
        ablate.merge(tmp_path)


def test_main_refuses_bad_arms_and_steps_before_running_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an arm ran")

    monkeypatch.setattr(ablate.subprocess, "run", never)
    common = [
        "--recipe",
        str(ROOT / "recipes" / "sst2-edge.yaml"),
        "--model",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit, match="unknown arm"):
        ablate.main([*common, "--arms", "base,fastr"])
    with pytest.raises(SystemExit, match="--steps must be at least 1"):
        ablate.main([*common, "--steps", "0"])
    not_recipe = tmp_path / "r.yaml"
    not_recipe.write_text("- a list\n")
    with pytest.raises(SystemExit, match="is not a recipe"):
        ablate.main(["--recipe", str(not_recipe), "--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
