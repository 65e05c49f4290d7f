import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import cli

from edgeslim import artifacts, report


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


def test_unknown_nested_key_suggests_from_its_own_model(tiny_bert: Path, tmp_path: Path) -> None:
    body = "steps:\n  - type: distill\n    data: sst2:train\n    losses: {kll: 1.0}\n"
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, body)), "--dry-run"])
    assert result.exit_code == 3
    line = " ".join(result.output.split())
    assert "unknown key 'kll' in 'losses' (did you mean 'kl'?); known: kl, soft_ce" in line
    assert "student_layers" not in line  # the distill step's own keys are not offered for `losses`


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


def test_steps_are_a_union_of_the_registrys_configs() -> None:
    import typing

    from edgeslim import steps
    from edgeslim.recipe import Step

    union, tag = typing.get_args(Step)
    assert list(typing.get_args(union)) == [m.Config for m in steps.modules().values()]
    assert tag.discriminator == "type"


def test_step_problems_are_reported_per_step(tiny_bert: Path, tmp_path: Path) -> None:
    body = "steps:\n  - type: export\n    opst: 17\n  - export\n  - {opset: 17}\n"
    body += "  - type: optimize\n    atl: 1\n"
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, body)), "--dry-run"])
    assert result.exit_code == 3
    line = " ".join(result.output.split())
    assert "step 1 (export): unknown key 'opst' (did you mean 'opset'?)" in line
    assert "step 2 needs a 'type' (finetune, distill," in line and "step 3 needs a 'type'" in line
    assert "step 4 (optimize): unknown key 'atl' (did you mean 'atol'?)" in line


def test_recipe_schema_describes_every_step_and_the_shipped_recipes() -> None:
    import yaml

    from edgeslim import steps

    result = cli(["recipe-schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    items = schema["properties"]["steps"]["items"]
    mapping = items["discriminator"]["mapping"]
    assert set(mapping) == set(steps.modules()) and len(items["oneOf"]) == len(mapping)
    definitions = {kind: schema["$defs"][ref.removeprefix("#/$defs/")] for kind, ref in mapping.items()}
    assert definitions["quantize"]["properties"]["type"]["const"] == "quantize"
    for definition in definitions.values():  # a step must say its type; no other keys
        assert definition["required"][0] == "type" and definition["additionalProperties"] is False
    assert {"name", "model", "output", "steps"} <= set(schema["required"])
    for path in (Path(__file__).parents[1] / "recipes").glob("*.yaml"):  # every key a recipe uses
        for step in yaml.safe_load(path.read_text())["steps"]:
            assert set(step) <= set(definitions[step["type"]]["properties"]), (path.name, step)


def _compare_recipe(tmp_path: Path, model: Path, data: Path, report: str = "    runs: 10\n") -> Path:
    """Two model steps (prune, simplify) then the artifact steps, on a tiny classifier."""
    return _recipe(
        tmp_path,
        model,
        "steps:\n  - type: prune\n    ffn: 0.5\n  - type: simplify\n    activation: relu\n"
        "  - type: export\n    task: sequence-classification\n  - type: optimize\n"
        "  - type: quantize\n    fidelity_size: 20\n"
        f"  - type: eval\n    data: {data}\n    bootstrap: 100\n"
        "  - type: bench\n    threads: [1, 2]\n    batch: [1]\n    seq: [8]\n    runs: 5\n"
        f"  - type: report\n{report}",
    )


def test_report_names_the_chain_and_measures_it_beside_the_teacher(
    balanced_cls: dict[str, Path], tmp_path: Path
) -> None:
    """The teacher (the recipe's model: its own predictions label the data, so its fp32 scores
    1.0), its plain int8, the pruned intermediate (fp32, int8) and the result's fp32 are rebuilt,
    evaluated on the eval step's data and benched side by side with the result."""
    teacher = balanced_cls["artifact"].parent / "artifact-hf"  # the HF model the fixture exported
    budget = f"{{data: {balanced_cls['own']}, metric: mcc, value: -1.0}}"
    gate = f"  - type: gate\n    budgets: {{min_metric: {budget}}}\n"
    recipe = _compare_recipe(tmp_path, teacher, balanced_cls["own"], "    runs: 10\n" + gate)
    result = cli(["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert result.output.count("| min_metric.mcc | >= -1.0 |") == 1  # the runner prints the gate's table
    out = tmp_path / "out"
    parsed = report.read(out / "report.json")
    names = ["tiny/model:fp32", "tiny/model:int8", "tiny/prune:fp32", "tiny/prune:int8"]
    assert [a.name for a in parsed.artifacts] == [*names, "tiny/optimize", "tiny/quantize"]
    roles = [
        "teacher fp32",
        "teacher int8",
        "intermediate fp32",
        "intermediate int8",
        "result fp32",
        "result",
    ]
    assert [a.role for a in parsed.artifacts] == roles
    metric = f"{balanced_cls['own']}:mcc"  # the gate's metric, not the first by name or HEADLINE
    assert parsed.primary_metric == metric and parsed.artifacts[0].metrics[metric] == 1.0
    by_name = {a.name: a for a in parsed.artifacts}
    for entry in parsed.artifacts:  # measured together: the report's runs, not the bench step's 5
        assert set(entry.latency) == {"t1b1s8", "t2b1s8"} and entry.size_mb > 0
        assert all(len(cell["samples_ms"]) == 10 for cell in entry.latency.values())
        assert (entry.quantization == "dynamic") == entry.name.endswith(("int8", "quantize"))
    assert by_name["tiny/model:fp32"].parameters > by_name["tiny/prune:fp32"].parameters  # unpruned
    assert by_name["tiny/prune:fp32"].steps == ["prune", "export", "optimize"]
    assert by_name["tiny/quantize"].steps[:4] == ["prune", "simplify", "export", "optimize"]
    manifest = artifacts.read_manifest(out)
    lineage = manifest["lineage"]
    assert [(s["step"], s["type"]) for s in lineage] == [(1, "prune"), (2, "simplify")]
    assert lineage[0]["config"]["ffn"] == 0.5 and lineage[1]["config"]["activation"] == "relu"
    assert all(s["summary"] for s in lineage)
    record = next(s for s in manifest["recipe"]["steps"] if s["type"] == "report")
    assert len(record["baselines"]) == 6  # export, optimize, quantize of the teacher and the pruned model
    page = (out / "report.md").read_text()
    assert "## Side by side with the teacher" in page and "tiny/prune:int8" in page
    again = cli(["run", str(recipe)])
    assert again.exit_code == 0 and again.output.count("reused (cached") == 9 + 6


def test_report_baselines_can_be_switched_off(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    body = "steps:\n  - type: simplify\n    activation: relu\n  - type: export\n  - type: report\n"
    typo = cli(["run", str(_recipe(tmp_path, model, body + "    baseline: false\n"))])
    assert typo.exit_code == 3 and "unknown key 'baseline' (did you mean 'baselines'?)" in typo.output
    recipe = _recipe(tmp_path, model, body + "    runs: 10\n    baselines: false\n")
    plan = cli(["run", str(recipe), "--dry-run"])
    assert plan.exit_code == 0 and "+ tiny/" not in plan.output
    result = cli(["run", str(recipe)])
    assert result.exit_code == 0, result.output
    parsed = report.read(tmp_path / "out" / "report.json")
    assert [(a.name, a.role, a.steps) for a in parsed.artifacts] == [
        ("tiny/export", "result", ["simplify", "export"])
    ]
    assert not list((tmp_path / ".edgeslim-cache").glob("b0*"))
    on = cli(["run", str(_recipe(tmp_path, model, body)), "--dry-run"])
    assert on.exit_code == 0 and "+ tiny/model export: to run" in on.output  # the teacher's by default


CHAIN = (
    "  - type: export\n    task: sequence-classification\n  - type: optimize\n  - type: quantize\n"
    "  - type: report\n"
)


def test_plan_names_the_teacher_and_each_intermediate(tiny_bert: Path, tmp_path: Path) -> None:
    """The sst2-student-int8 shape: the fine-tuned teacher (step 1), the distilled and pruned
    models are rebuilt from their steps' outputs; the simplified one is the recipe's own export."""
    from edgeslim import pipeline
    from edgeslim.recipe import load

    models = (
        "steps:\n  - type: finetune\n    task: sequence-classification\n  - type: distill\n"
        "    student_layers: 1\n  - type: prune\n    ffn: 0.5\n    recover_with: '@1'\n"
        "  - type: simplify\n    activation: relu\n"
    )
    rows = pipeline.plan(load(_recipe(tmp_path, tiny_bert, models + CHAIN)), tmp_path / "cache")
    context = rows[-1]["context"]
    assert context["name"] == "tiny/quantize"
    assert [(b["name"], b["role"]) for b in context["beside"]] == [
        ("tiny/finetune:fp32", "teacher fp32"),
        ("tiny/finetune:int8", "teacher int8"),
        ("tiny/distill:fp32", "intermediate fp32"),
        ("tiny/distill:int8", "intermediate int8"),
        ("tiny/prune:fp32", "intermediate fp32"),
        ("tiny/prune:int8", "intermediate int8"),
        ("tiny/optimize", "result fp32"),
    ]
    assert [b["stages"][0]["source"] for b in context["builds"]] == [rows[i]["dir"] for i in range(3)]
    assert [[s["step"].type for s in b["stages"]] for b in context["builds"]] == [
        ["export", "optimize", "quantize"]
    ] * 3
    assert context["beside"][-1]["dir"] == rows[5]["dir"]
    only = "steps:\n  - type: finetune\n    task: sequence-classification\n"
    rows = pipeline.plan(load(_recipe(tmp_path, tiny_bert, only + CHAIN)), tmp_path / "cache")
    context = rows[-1]["context"]  # the teacher is the last model: its fp32 is the recipe's own
    assert [(b["name"], b["role"]) for b in context["beside"]] == [("tiny/optimize", "teacher fp32")]
    assert context["builds"] == []  # the result is the teacher's plain int8: not built twice
    fidelity = CHAIN.replace("type: quantize\n", "type: quantize\n    fidelity_data: sst2:train\n")
    rows = pipeline.plan(load(_recipe(tmp_path, tiny_bert, only + fidelity)), tmp_path / "cache")
    assert rows[-1]["context"]["builds"] == []  # another fidelity report, the same model
    static = CHAIN.replace("type: quantize\n", "type: quantize\n    mode: static\n")
    rows = pipeline.plan(load(_recipe(tmp_path, tiny_bert, only + static)), tmp_path / "cache")
    context = rows[-1]["context"]
    assert [(b["name"], b["role"]) for b in context["beside"]] == [
        ("tiny/optimize", "teacher fp32"),
        ("tiny/finetune:int8", "teacher int8"),
    ]
    (build,) = context["builds"]
    assert [s["step"].type for s in build["stages"]] == ["quantize"] and build["stages"][0]["source"] == rows[
        2
    ]["dir"]


def test_recipe_gate_times_the_result_against_the_teachers_int8(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gate step's ratio budget finds `teacher int8` in the report step's report.json (a
    cache entry beside the output) and times the result against it. The gate's timings are
    injected (the result at 0.25x), so its verdict is the budget's, not this CPU's."""
    from edgeslim import bench

    real, timed = bench.run_grid, []

    def grid(models: dict[str, Path], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if "versus" not in models:  # the report step's own measurements run for real
            return real(models, *args, **kwargs)
        timed.append(models["versus"])
        cells = [{"median_ms": 2.0, "samples_ms": [2.0] * 40}, {"median_ms": 8.0, "samples_ms": [8.0] * 40}]
        return {"cells": cells}

    monkeypatch.setattr(bench, "run_grid", grid)
    body = (
        "steps:\n  - type: simplify\n    activation: relu\n"
        "  - type: export\n    task: sequence-classification\n"
        "  - type: optimize\n  - type: quantize\n  - type: report\n    runs: 10\n  - type: gate\n"
        "    budgets: {latency: [{threads: 1, batch: 1, seq: 8, runs: 10, max_ratio: 0.3, "
        "versus: teacher int8}]}\n"
    )
    result = cli(["run", str(_recipe(tmp_path, tiny_bert, body))])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "gate.json").read_text())["budgets"]
    assert [(r["budget"], r["passed"]) for r in rows] == [("latency.ratio (cpu t1 b1 s8)", True)]
    assert rows[0]["limit"] == "<= 0.3x teacher int8" and rows[0]["actual"].startswith("0.250x")
    assert len(timed) == 1 and timed[0].parent.name.startswith("b") and ".edgeslim-cache" in str(timed[0])


def test_gate_metric_skips_a_gate_without_budgets(tmp_path: Path) -> None:
    """A gate with neither budgets nor budgets_file is the gate step's error when it runs (exit 3),
    not a crash while the report's headline is chosen."""
    from edgeslim import pipeline
    from edgeslim.recipe import Recipe

    def recipe(gate: dict[str, object]) -> Recipe:
        steps = [{"type": "export"}, {"type": "report"}, {"type": "gate", **gate}]
        return Recipe.model_validate(
            {"name": "r", "model": "m", "output": str(tmp_path / "o"), "steps": steps}
        )

    assert pipeline.gate_metric(recipe({})) is None
    inline = {"min_metric": {"data": "sst2:dev", "metric": "mcc", "value": 0.1}}
    assert pipeline.gate_metric(recipe({"budgets": inline})) == "sst2:dev:mcc"


def test_a_recipe_trains_low_bit_from_an_earlier_steps_model(
    balanced_cls: dict[str, Path], tmp_path: Path
) -> None:
    """qat is a model step; its teacher can be "@1", the model an earlier step made."""
    teacher = balanced_cls["artifact"].parent / "artifact-hf"
    own = balanced_cls["own"]
    body = (
        "steps:\n  - type: prune\n    ffn: 0.5\n"
        f"  - type: qat\n    teacher: '@1'\n    data: {own}\n    eval: {own}\n    max_steps: 2\n"
        "    eval_every: 2\n    save_every: 2\n    batch_size: 8\n"
        "  - type: export\n    task: sequence-classification\n"
    )
    result = cli(["run", str(_recipe(tmp_path, teacher, body))])
    assert result.exit_code == 0, result.output
    manifest = artifacts.read_manifest(tmp_path / "out")
    lowbit = manifest["steps"][0]["lowbit"]
    assert lowbit["method"]["type"] == "qat" and "01-prune-" in lowbit["method"]["teacher"]
    assert [s["type"] for s in manifest["lineage"]] == ["prune", "qat"]
