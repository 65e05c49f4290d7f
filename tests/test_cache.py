"""The recipe cache never replays a stale verdict: keys cover contents, code and host."""

from pathlib import Path

import pytest
from conftest import cli, lock_held_elsewhere

from edgeslim import artifacts, fingerprint, pipeline
from edgeslim.recipe import load

GATE = "steps:\n  - type: export\n  - type: gate\n    budgets_file: {budgets}\n"


def _recipe(tmp_path: Path, model: Path, body: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: tiny\nmodel: {model}\noutput: {tmp_path / 'out'}\n{body}")
    return path


def test_tightened_budgets_file_fails_the_rerun(tiny_bert: Path, tmp_path: Path) -> None:
    budgets = tmp_path / "b.yaml"
    budgets.write_text("max_size_mb: 100\n")
    recipe = _recipe(tmp_path, tiny_bert, GATE.format(budgets=budgets))
    first = cli(["run", str(recipe)])
    assert first.exit_code == 0, first.output
    again = cli(["run", str(recipe)])
    assert again.exit_code == 0 and again.output.count("reused (cached") == 2
    budgets.write_text("max_size_mb: 0.001\n")  # same path, tighter contents
    tightened = cli(["run", str(recipe)])
    assert tightened.exit_code == 6, tightened.output
    assert "[1/2] export: reused" in tightened.output and "[2/2] gate: running" in tightened.output
    manifest = artifacts.read_manifest(tmp_path / "out")
    gate_record = manifest["recipe"]["steps"][1]
    assert gate_record["inputs"] == {str(budgets): fingerprint.sha256_tree(budgets)}


def test_inputs_cover_files_folders_datasets_and_what_a_budgets_file_names(tmp_path: Path) -> None:
    from edgeslim.steps import evaluate, gate

    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\ngood\t1\n")
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "model.onnx").write_bytes(b"x")
    cfg = evaluate.Config(data=str(data), reference=reference)
    before = fingerprint.inputs(cfg)
    assert set(before) == {str(data), str(reference)}
    (reference / "model.onnx").write_bytes(b"y")  # a retrained reference changes the key
    assert fingerprint.inputs(cfg)[str(reference)] != before[str(reference)]
    assert set(fingerprint.inputs(evaluate.Config(data="sst2:dev"))) == {"sst2:dev"}
    (tmp_path / "baseline.json").write_text('{"schema": "edgeslim.bench/1"}')
    budgets = tmp_path / "b.yaml"
    budgets.write_text(
        "max_drop: {reference: ref, data: dev.tsv, metric: accuracy, value: 0.01}\n"
        "baseline: {file: baseline.json}\n"
    )
    named = fingerprint.inputs(gate.Config(budgets_file=budgets))
    wanted = {budgets, tmp_path / "ref", tmp_path / "dev.tsv", tmp_path / "baseline.json"}
    assert set(named) == {str(path) for path in wanted}


def test_only_host_dependent_steps_change_with_the_cpu(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "steps:\n  - type: export\n  - type: quantize\n  - type: bench\n    runs: 5\n"
    recipe = load(_recipe(tmp_path, tiny_bert, body))
    zen3 = {"model": "AMD EPYC 7B13", "machine": "x86_64", "cores": 2, "flags": ["avx2", "fma"]}
    zen4 = {**zen3, "model": "AMD EPYC 9B14", "flags": ["avx2", "avx512_bf16", "avx512_vnni", "fma"]}
    monkeypatch.setattr(fingerprint, "host", lambda: zen3)
    first = [row["key"] for row in pipeline.plan(recipe, tmp_path / "cache")]
    monkeypatch.setattr(fingerprint, "host", lambda: zen4)
    second = [row["key"] for row in pipeline.plan(recipe, tmp_path / "cache")]
    assert first[0] == second[0]  # export does not depend on the CPU
    assert first[1] != second[1] and first[2] != second[2]


def test_code_or_library_change_invalidates_every_step(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load(_recipe(tmp_path, tiny_bert, "steps:\n  - type: export\n  - type: optimize\n"))
    first = [row["key"] for row in pipeline.plan(recipe, tmp_path / "cache")]
    real = fingerprint.environment()
    monkeypatch.setattr(fingerprint, "environment", lambda: {**real, "edgeslim_code": "edited"})
    second = [row["key"] for row in pipeline.plan(recipe, tmp_path / "cache")]
    assert all(a != b for a, b in zip(first, second, strict=True))


def test_changed_model_file_invalidates_the_first_step(tiny_bert: Path, tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    recipe = load(_recipe(tmp_path, model, "steps:\n  - type: export\n"))
    first = pipeline.plan(recipe, tmp_path / "cache")[0]["key"]
    vocab = model / "tokenizer_config.json"
    vocab.write_text(vocab.read_text().replace("}", ', "model_max_length": 33}', 1))
    assert pipeline.plan(recipe, tmp_path / "cache")[0]["key"] != first  # tokenizer files count


def test_a_cache_entry_held_by_another_run_is_neither_reused_nor_replaced(
    tiny_bert: Path, tmp_path: Path
) -> None:
    path = _recipe(tmp_path, tiny_bert, "steps:\n  - type: export\n  - type: optimize\n")
    assert cli(["run", str(path)]).exit_code == 0
    entry = pipeline.plan(load(path), tmp_path / pipeline.CACHE_DIR)[0]["dir"]
    with lock_held_elsewhere(entry) as pid:
        other = cli(["run", str(path), "-o", str(tmp_path / "other")])  # another output, same cache
        assert other.exit_code == 4 and f"pid {pid}" in other.output, other.output
    assert cli(["run", str(path), "-o", str(tmp_path / "other")]).exit_code == 0


def test_an_output_finished_by_another_run_meanwhile_is_not_replaced(
    bert_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import shutil

    from edgeslim import locking

    out, real = tmp_path / "o", locking.hold

    @contextlib.contextmanager
    def slow_hold(target: Path):  # type: ignore[no-untyped-def]
        if target == out and not out.exists():  # another run finishes while this one waits
            shutil.copytree(bert_fp32, out)
        with real(target):
            yield

    monkeypatch.setattr(locking, "hold", slow_hold)
    result = cli(["optimize", str(bert_fp32), "-o", str(out)])
    assert result.exit_code == 4 and "already exists" in result.output
    assert artifacts.read_manifest(out)["steps"][-1]["type"] == "export"  # the other run's output


def test_data_dir_is_not_hashed_whole_only_the_datasets_used(tmp_path: Path) -> None:
    from edgeslim.steps import evaluate

    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "glue_dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (tmp_path / "unrelated.bin").write_bytes(b"x" * 1000)
    cfg = evaluate.Config(data="sst2:dev", data_dir=tmp_path)
    assert fingerprint.inputs(cfg, tmp_path) == {
        "sst2:dev": fingerprint.sha256_tree(tmp_path / "sst2" / "glue_dev.tsv")
    }
