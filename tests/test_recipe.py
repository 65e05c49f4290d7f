import json
from pathlib import Path

from conftest import cli

from edgeslim import artifacts


def _recipe(tmp_path: Path, model: Path, body: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: tiny\nmodel: {model}\noutput: {tmp_path / 'out'}\n{body}")
    return path


STEPS = "steps:\n  - type: export\n  - type: optimize\n    require_full_fusion: true\n  - type: inspect\n"


def test_rerun_reuses_every_step(tiny_bert: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, tiny_bert, STEPS)
    first = cli(["run", str(recipe)])
    assert first.exit_code == 0, first.output
    assert "reused: 0" in first.output
    second = cli(["run", str(recipe)])
    assert second.exit_code == 0, second.output
    assert second.output.count("reused (cached") == 3 and "reused: 3" in second.output
    manifest = artifacts.read_manifest(tmp_path / "out")
    assert [s["type"] for s in manifest["steps"]] == ["export", "optimize", "inspect"]
    assert all(s["reused"] for s in manifest["recipe"]["steps"])
    report = json.loads((tmp_path / "out" / "inspect.json").read_text())
    assert report["fusion"]["full"]


def test_changed_config_reruns_from_that_step(tiny_bert: Path, tmp_path: Path) -> None:
    assert cli(["run", str(_recipe(tmp_path, tiny_bert, STEPS))]).exit_code == 0
    changed = STEPS.replace("require_full_fusion: true", "require_full_fusion: true\n    atol: 0.001")
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, changed))])
    assert result.exit_code == 0, result.output
    assert result.output.count("reused (cached") == 1  # export only


def test_dry_run_writes_nothing(tiny_bert: Path, tmp_path: Path) -> None:
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, STEPS)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1. export: to run" in result.output and "3. inspect" in result.output
    assert not (tmp_path / "out").exists()


def test_unknown_key_suggests(tiny_bert: Path, tmp_path: Path) -> None:
    body = "steps:\n  - type: export\n    opst: 17\n"
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, body))])
    assert result.exit_code == 3
    assert "unknown key 'opst' (did you mean 'opset'?)" in result.output


def test_unknown_top_level_key(tiny_bert: Path, tmp_path: Path) -> None:
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, "stesp: []\n" + STEPS))])
    assert result.exit_code == 3 and "did you mean 'steps'" in result.output


def test_unknown_step_type(tiny_bert: Path, tmp_path: Path) -> None:
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, "steps:\n  - type: exprt\n"))])
    assert result.exit_code == 3
    assert "unknown step type 'exprt' (did you mean 'export'?)" in result.output


def test_first_step_must_take_model(tiny_bert: Path, tmp_path: Path) -> None:
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, "steps:\n  - type: optimize\n"))])
    assert result.exit_code == 3 and "first step" in result.output


def test_missing_and_invalid_recipe(tmp_path: Path) -> None:
    assert cli(["run", str(tmp_path / "none.yaml")]).exit_code == 3
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    assert cli(["run", str(tmp_path / "bad.yaml")]).exit_code == 3


def test_foreign_output_needs_force(tiny_bert: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, STEPS))])
    assert result.exit_code == 4 and "--force" in result.output


def test_shipped_recipes_validate() -> None:
    import yaml

    from edgeslim.recipe import load

    paths = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert len(paths) >= 3  # an empty or moved folder would make this loop check nothing
    for path in paths:
        written = [step["type"] for step in yaml.safe_load(path.read_text())["steps"]]
        assert [step.type for step in load(path).steps] == written, path.name
