import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import cli

from edgeslim import bench, report
from edgeslim.errors import InputError

FAST = ["--threads", "1", "--batch", "1", "--seq", "8", "--runs", "5", "--warmup", "1"]


def _json(output: str) -> dict:
    return json.loads(output[output.index("{") :])


def test_bench_two_artifacts_json(bert_fp32: Path, bert_fused: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = cli(
        ["bench", str(bert_fp32), str(bert_fused), *FAST, "--seq", "8,16", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = _json(result.output)
    assert data == json.loads(out.read_text())
    assert data["schema"] == bench.SCHEMA and data["baseline"] == "bert-fp32"
    assert {(c["model"], c["seq"]) for c in data["cells"]} == {
        (m, s) for m in ("bert-fp32", "bert-fused") for s in (8, 16)
    }
    cells = {(c["model"], c["seq"]): c for c in data["cells"]}
    for cell in cells.values():  # every figure is computed from the cell's own samples
        ms = np.asarray(cell["samples_ms"])
        assert len(ms) == 5 and cell["median_ms"] == pytest.approx(np.median(ms), abs=2e-3)
        assert cell["p99_ms"] == pytest.approx(np.percentile(ms, 99), abs=2e-3)
        assert cell["mean_ms"] == pytest.approx(ms.mean(), abs=2e-3)
        assert cell["throughput_seq_s"] == pytest.approx(1e3 / np.median(ms), rel=1e-2)
        base = np.median(cells[("bert-fp32", cell["seq"])]["samples_ms"])
        # samples are stored rounded to 1 us: the ratio recomputed from them is good to ~1%
        assert cell["speedup_vs_baseline"] == pytest.approx(base / np.median(ms), rel=0.03)
        assert 0 < cell["speedup_ci95"][0] <= cell["speedup_ci95"][1]
    assert data["placement"]["bert-fused"]["CPUExecutionProvider"] > 0
    assert data["sessions"]["bert-fp32"]["session_create_ms"] > 0
    assert {"versions", "cpu"} <= set(data) and data["settings"]["spinning"] is False


def test_bench_bad_input(bert_fp32: Path, tmp_path: Path) -> None:
    result = cli(["bench", str(bert_fp32), "--ep", "warp", *FAST])
    assert result.exit_code == 3 and "unknown execution provider" in result.output
    result = cli(["bench", str(bert_fp32), "--ep", "cuda", *FAST])
    assert result.exit_code == 7 and "onnxruntime-gpu" in result.output
    (tmp_path / "x.onnx").write_text("not onnx")
    assert cli(["bench", str(tmp_path / "x.onnx"), *FAST]).exit_code == 3
    assert cli(["bench", str(bert_fp32), "--threads", "one"]).exit_code == 3


def _budgets(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return path


def _fixed_timings(monkeypatch: pytest.MonkeyPatch, medians: dict[str, float]) -> list[dict[str, Path]]:
    """The gate's timing run, injected: each model's samples (40, median as given, role name as
    key: the artifact's folder name or `versus`); returns the models asked for."""
    seen: list[dict[str, Path]] = []

    def fake_grid(models: dict[str, Path], *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(models)
        assert all(path.is_file() for path in models.values())
        cells = []
        for name in models:
            ms = medians.get(name, medians.get("*", 5.0))
            cells.append({"model": name, "median_ms": ms, "p95_ms": ms, "samples_ms": [ms] * 40})
        return {"cells": cells}

    monkeypatch.setattr(bench, "run_grid", fake_grid)
    return seen


def test_gate_passes_and_fails(
    bert_fp32: Path, bert_fused: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    _fixed_timings(monkeypatch, {"*": 5.0})  # p50 5 ms: the verdicts below are the budgets', not this CPU's
    ok = _budgets(
        tmp_path,
        "max_size_mb: 10\nmax_params: 1000000\nfusion: {attention: full}\n"
        "latency:\n  - {ep: cpu, threads: 1, batch: 1, seq: 8, max_p50_ms: 6, runs: 10}\n",
    )
    result = cli(["gate", str(bert_fused), "--budgets", str(ok)])
    assert result.exit_code == 0, result.output
    assert "| max_size_mb |" in result.output and "FAIL" not in result.output
    params = json.loads(cli(["inspect", str(bert_fused), "--json"]).output)["parameters"]
    size_mb = sum(p.stat().st_size for p in bert_fused.glob("model.onnx*")) / 1e6
    bad = _budgets(
        tmp_path,
        f"max_size_mb: {size_mb * 0.9:.4f}\nmax_params: {params - 1}\n"
        "latency:\n  - {ep: cpu, threads: 1, batch: 1, seq: 8, max_p50_ms: 4, runs: 10}\n",
    )  # just below the artifact's own size, parameter count and (injected) p50
    junit = tmp_path / "gate.xml"
    result = cli(["gate", str(bert_fused), "--budgets", str(bad), "--junit", str(junit)])
    assert result.exit_code == 6 and "max_size_mb" in result.output
    suite = ET.parse(junit).getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["max_size_mb", "max_params", "latency.p50 (cpu t1 b1 s8)"] and suite.get("tests") == "3"
    assert summary.read_text().count("## edgeslim gate") == 2
    exact = _budgets(tmp_path, f"max_size_mb: {size_mb * 1.01:.4f}\nmax_params: {params}\n")
    assert cli(["gate", str(bert_fused), "--budgets", str(exact)]).exit_code == 0
    fusion = _budgets(tmp_path, "fusion: {attention: full}\n")
    assert cli(["gate", str(bert_fp32), "--budgets", str(fusion)]).exit_code == 6  # unfused export


def test_gate_latency_ratio_versus_another_model(
    bert_fp32: Path, bert_fused: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_ratio: p50 over another model's p50, timed interleaved in the gate's run; `versus` is
    an artifact folder (relative to the budgets file) or a role in the artifact's report.json."""
    art = tmp_path / "art"
    shutil.copytree(bert_fused, art)
    (tmp_path / "ref").symlink_to(bert_fp32)
    seen = _fixed_timings(monkeypatch, {"art": 2.0, "versus": 8.0})  # the artifact at 0.25x

    def gate(versus: str, limit: float) -> Any:
        lat = f"{{threads: 1, batch: 1, seq: 8, runs: 10, max_ratio: {limit}, versus: {versus}}}"
        return cli(
            ["gate", str(art), "--budgets", str(_budgets(tmp_path, f"latency:\n  - {lat}\n")), "--json"]
        )

    loose = gate("ref", 0.3)
    assert loose.exit_code == 0, loose.output
    assert seen[-1]["versus"] == (tmp_path / "ref" / "model.onnx")  # relative to the budgets file
    (row,) = _json(loose.output)["budgets"]
    assert row["budget"] == "latency.ratio (cpu t1 b1 s8)" and row["limit"].startswith("<= 0.3x")
    assert row["actual"].startswith("0.250x")
    assert gate("ref", 0.2).exit_code == 6  # the same timings over a tighter limit
    missing = gate("'teacher int8'", 0.3)
    assert missing.exit_code == 3 and "no report.json" in missing.output
    report = {"artifacts": [{"name": "t/finetune:int8", "role": "teacher int8", "path": str(bert_fp32)}]}
    (art / "report.json").write_text(json.dumps(report))
    assert gate("'teacher int8'", 0.3).exit_code == 0
    assert seen[-1]["versus"] == bert_fp32 / "model.onnx"
    unknown = gate("'teacher fp16'", 0.3)
    assert unknown.exit_code == 3 and "roles: teacher int8" in " ".join(unknown.output.split())
    lone = cli(["gate", str(art), "--budgets", str(_budgets(tmp_path, "latency:\n  - {max_ratio: 0.5}\n"))])
    assert lone.exit_code == 3 and "max_ratio and versus go together" in lone.output


def test_gate_latency_ratio_direction_verdict_and_cache_lookup(
    bert_fp32: Path, bert_fused: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ratio is the artifact's p50 over versus's (not the inverse), passes while the CI's
    low end is within the limit, and a role's path recorded relative to where a recipe ran is
    found in the cache beside the artifact."""
    from edgeslim import gate

    run = tmp_path / "run"
    shutil.copytree(bert_fused, run / "art")
    shutil.copytree(bert_fp32, run / ".edgeslim-cache" / "b01-quantize-abc")
    entry = {
        "name": "r/finetune:int8",
        "role": "teacher int8",
        "path": "out/.edgeslim-cache/b01-quantize-abc",
    }
    (run / "art" / "report.json").write_text(json.dumps({"artifacts": [entry]}))
    seen: list[dict[str, Path]] = []

    def fake_grid(models: dict[str, Path], *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(models)
        ours = [8.0, 12.0] * 20  # p50 10 ms, its bootstrap medians anywhere from 8 to 12
        return {
            "cells": [{"median_ms": 10.0, "samples_ms": ours}, {"median_ms": 40.0, "samples_ms": [40.0] * 40}]
        }

    monkeypatch.setattr(bench, "run_grid", fake_grid)

    def verdict(limit: float) -> dict[str, Any]:
        lat = f"{{threads: 1, batch: 1, seq: 8, runs: 10, max_ratio: {limit}, versus: teacher int8}}"
        (row,) = gate.check(run / "art", gate.load(_budgets(tmp_path, f"latency:\n  - {lat}\n")))
        return row

    assert seen == [] and verdict(0.3)["passed"]
    assert seen[0]["versus"] == run / ".edgeslim-cache" / "b01-quantize-abc" / "model.onnx"
    assert verdict(0.3)["actual"].startswith("0.250x (95% CI 0.200-0.300")
    assert verdict(0.22)["passed"]  # p50 ratio 0.25 > 0.22, but the CI reaches down to 0.20
    assert not verdict(0.19)["passed"]  # the whole CI is above the limit
    (run / "art" / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="not a report.json"):
        verdict(0.3)


def test_gate_metric_budgets(balanced_cls: dict[str, Path], tmp_path: Path) -> None:
    """On data labelled with the artifact's own predictions it scores 1.0 and its head-negated
    copy 0.0: the first passes min_metric and max_drop, the second fails both."""
    art, negated, own = balanced_cls["artifact"], balanced_cls["negated"], balanced_cls["own"]

    def gate(artifact: Path, reference: Path) -> tuple[int, list[dict]]:
        budgets = _budgets(
            tmp_path,
            f"min_metric: {{data: '{own}', metric: accuracy, value: 0.99}}\n"
            f"max_drop: {{reference: {reference}, data: '{own}', metric: accuracy, value: 0.5}}\n",
        )
        result = cli(["gate", str(artifact), "--budgets", str(budgets), "--json"])
        return result.exit_code, _json(result.output)["budgets"]

    code, rows = gate(art, negated)
    assert code == 0 and [r["budget"] for r in rows] == ["min_metric.accuracy", "max_drop.accuracy"]
    assert [r["actual"] for r in rows] == ["1.0000", "-1.0000"]
    code, rows = gate(negated, art)
    assert code == 6 and [(r["actual"], r["passed"]) for r in rows] == [("0.0000", False), ("1.0000", False)]


def test_gate_baseline_is_noise_aware(
    bert_fused: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict comes from the bootstrap CI of the median ratio, not the medians: a noisy
    10% slower re-measurement (CI reaching 1.0) passes a 5% slack that the plain median ratio
    (1.10) would fail; a steady 10% slowdown fails; a steady 2% one passes."""
    stored = _json(cli(["bench", str(bert_fused), *FAST, "--runs", "10", "--json"]).output)
    cells = [{**c, "runs": 20, "samples_ms": [10.0] * 20} for c in stored["cells"]]
    (tmp_path / "baseline.json").write_text(json.dumps({**stored, "cells": cells}))
    budgets = _budgets(tmp_path, "baseline: {file: baseline.json, max_latency_regression: 0.05}\n")
    noisy = [10.0] * 9 + [11.0] * 11  # median 11.0; resampled medians are 10.0 about 1 time in 4
    for now, code in ((noisy, 0), ([11.0] * 20, 6), ([10.2] * 20, 0)):
        measured = {"cells": [{"samples_ms": now, **bench.stats(np.asarray(now), 1)}]}
        monkeypatch.setattr(bench, "run_grid", lambda *args, measured=measured, **kw: measured)
        result = cli(["gate", str(bert_fused), "--budgets", str(budgets), "--json"])
        assert result.exit_code == code, result.output
        (row,) = _json(result.output)["budgets"]
        assert row["actual"].startswith(f"{np.median(now) / 10:.3f}x")


def test_gate_cannot_evaluate(bert_fused: Path, tmp_path: Path) -> None:
    typo = _budgets(tmp_path, "max_size: 12\n")
    result = cli(["gate", str(bert_fused), "--budgets", str(typo)])
    assert result.exit_code == 3 and "did you mean 'max_size_mb'" in result.output
    unit = _budgets(tmp_path, "max_size_mb: 12MB\n")
    assert cli(["gate", str(bert_fused), "--budgets", str(unit)]).exit_code == 3
    assert cli(["gate", str(tmp_path / "missing"), "--budgets", str(unit)]).exit_code == 3
    (tmp_path / "old.json").write_text(json.dumps({"schema": "edgeslim.bench/0", "cells": []}))
    old = _budgets(tmp_path, "baseline: {file: old.json}\n")
    result = cli(["gate", str(bert_fused), "--budgets", str(old)])
    assert result.exit_code == 3 and "schema" in result.output


def test_report_files_and_schema(bert_fp32: Path, bert_fused: Path, tmp_path: Path) -> None:
    bench_file = tmp_path / "device.json"
    assert cli(["bench", str(bert_fp32), str(bert_fused), *FAST, "--out", str(bench_file)]).exit_code == 0
    out = tmp_path / "report"
    result = cli(["report", str(bert_fp32), str(bert_fused), "--bench", str(bench_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    parsed = report.read(out / "report.json")
    assert [a.name for a in parsed.artifacts] == ["bert-fp32", "bert-fused"]
    assert parsed.latency_cell == "t1b1s8" and parsed.plots == ["latency.png", "pareto.png"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page.replace("http-equiv", "")
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    bad = json.loads((out / "report.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**bad, "schema": "edgeslim.report/0"}))
    with pytest.raises(InputError):
        report.read(tmp_path / "bad.json")


def test_recipe_ends_with_report_and_gate(tiny_bert: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: full\nmodel: {tiny_bert}\noutput: {tmp_path / 'out'}\nsteps:\n"
        "  - type: export\n  - type: optimize\n  - type: quantize\n    fidelity_size: 20\n"
        "  - type: bench\n    threads: [1]\n    batch: [1]\n    seq: [8]\n    runs: 5\n"
        "  - type: report\n  - type: gate\n    budgets: {max_size_mb: 0.0001}\n"
    )
    for _ in range(2):  # the rerun reuses every step and still reports the failed budget
        result = cli(["run", str(recipe)])
        assert result.exit_code == 6, result.output
        assert "max_size_mb" in result.output
    out = tmp_path / "out"
    assert {"report.html", "report.json", "gate.json", "bench.json", "model.onnx"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "gate.json").read_text())["passed"] is False
    parsed = report.read(out / "report.json")  # named by recipe and step; the int8 beside its fp32
    assert [(a.name, a.role) for a in parsed.artifacts] == [
        ("full/optimize", "result fp32"),
        ("full/quantize", "result"),
    ]
    assert all(len(a.latency["t1b1s8"]["samples_ms"]) == 30 for a in parsed.artifacts)  # side by side
    assert "FAIL (1 of 1 failed): max_size_mb" in cli(["summary", str(out)]).output


def _entry(name: str, role: str, size_mb: float, accuracy: float, ms: dict[str, list[float]]) -> report.Entry:
    latency = {
        cell: {"median_ms": float(np.median(s)), "p90_ms": max(s), "samples_ms": s} for cell, s in ms.items()
    }
    return report.Entry(
        name=name,
        role=role,
        path=f"/x/{name}",
        task="sequence-classification",
        size_mb=size_mb,
        parameters=1000,
        steps=["finetune", "distill", "export"],
        metrics={"sst2:dev:accuracy": accuracy},
        latency=latency,
    )


def _inject(folder: Path, teacher_int8_ms: float) -> None:
    """A report.json (result 5/4 ms at 1/2 threads, teacher int8 and fp32 slower) and a gate.json."""
    entries = [
        _entry(
            "r/finetune:fp32", "teacher fp32", 90.0, 0.9, {"t1b1s64": [20.0] * 10, "t2b1s64": [16.0] * 10}
        ),
        _entry(
            "r/finetune:int8",
            "teacher int8",
            24.0,
            0.88,
            {"t1b1s64": [teacher_int8_ms] * 10, "t2b1s64": [8.0] * 10},
        ),
        _entry("r/quantize", "result", 22.5, 0.85, {"t1b1s64": [5.0] * 10, "t2b1s64": [4.0] * 10}),
    ]
    built = report.build(entries, {"cpu": "injected"})
    folder.mkdir(exist_ok=True)
    (folder / "report.json").write_text(built.model_dump_json(by_alias=True))
    rows = [
        {"budget": "max_size_mb", "limit": "20.0 MB", "actual": "22.5 MB", "passed": False},
        {"budget": "min_metric.accuracy", "limit": ">= 0.75", "actual": "0.8500", "passed": True},
    ]
    (folder / "gate.json").write_text(json.dumps({"passed": False, "budgets": rows}))


def test_summary_follows_report_json(tmp_path: Path) -> None:
    folder = tmp_path / "art"
    _inject(folder, teacher_int8_ms=10.0)
    result = cli(["summary", str(folder)])
    assert result.exit_code == 0, result.output
    lines = {line.split("  ")[0]: line for line in result.output.splitlines()}
    assert "r/quantize: finetune -> distill -> export" in lines["result"]
    assert "22.5 MB: 0.94x teacher int8 (24.0 MB), 0.25x teacher fp32 (90.0 MB)" in lines["size"]
    assert "5.00 ms: 0.50x (95% CI 0.50-0.50) teacher int8 (10.00 ms)" in lines["latency t1 b1 s64"]
    assert "0.25x (95% CI 0.25-0.25) teacher fp32 (20.00 ms)" in lines["latency t1 b1 s64"]
    assert "4.00 ms: 0.50x (95% CI 0.50-0.50) teacher int8 (8.00 ms)" in lines["latency t2 b1 s64"]
    assert (
        "0.8500: -0.0300 vs teacher int8 (0.8800), -0.0500 vs teacher fp32 (0.9000)"
        in lines["sst2:dev:accuracy"]
    )
    assert "FAIL (1 of 2 failed): max_size_mb 22.5 MB (limit 20.0 MB)" in lines["gate"]
    _inject(folder, teacher_int8_ms=20.0)  # another report.json: other figures
    assert "5.00 ms: 0.25x (95% CI 0.25-0.25) teacher int8 (20.00 ms)" in cli(["summary", str(folder)]).output
    (folder / "report.json").unlink()
    missing = cli(["summary", str(folder)])
    assert missing.exit_code == 3 and "no report.json" in missing.output


def test_report_prefers_the_headline_metric() -> None:
    """STS-B reports pearson and spearman: the report (and summary) lead with spearman, as the gate does."""
    entry = _entry("r/quantize", "result", 22.5, 0.85, {"t1b1s64": [5.0, 5.0]})
    both = entry.model_copy(
        update={"metrics": {"stsb:dev:pearson_cosine": 0.8, "stsb:dev:spearman_cosine": 0.7}}
    )
    assert report.build([both], {}).primary_metric == "stsb:dev:spearman_cosine"
    # a metric the gate or --metric names wins, on the same data or (a budgets file's path) other data
    pearson = "stsb:dev:pearson_cosine"
    assert report.build([both], {}, [pearson]).primary_metric == pearson
    assert report.build([both], {}, ["dev.tsv:pearson_cosine"]).primary_metric == pearson  # a budgets path
    assert report.build([both], {}, ["mcc"]).primary_metric == "stsb:dev:spearman_cosine"  # not shared
    # --metric, else the gate's (here not shared), else the eval step's: the first shared one wins
    assert report.build([both], {}, [None, "x.tsv:mcc", pearson]).primary_metric == pearson


def test_report_metric_names_data_exactly_and_the_eval_headline(tmp_path: Path) -> None:
    from edgeslim import artifacts
    from edgeslim.steps import report as step

    assert not step._names("trec:test:accuracy", "sst2:dev:accuracy")  # other data: not what was asked
    assert step._names("trec:test:accuracy", "accuracy") and step._names(
        "sst2:dev:accuracy", "sst2:dev:accuracy"
    )
    manifest = artifacts.new_manifest("sequence-classification", {"path": "m", "sha256": "0"})
    result = {"metrics": {"accuracy": {"value": 0.9}, "macro_f1": {"value": 0.8}}}
    manifest["steps"] = [
        {"type": "export"},
        {"type": "eval", "config": {"data": "sst2:dev"}, "result": result},
    ]
    artifacts.write_json(tmp_path / artifacts.MANIFEST, manifest)
    assert step.eval_headline(tmp_path) == "sst2:dev:accuracy"
    manifest["steps"] = manifest["steps"][:1]
    artifacts.write_json(tmp_path / artifacts.MANIFEST, manifest)
    assert step.eval_headline(tmp_path) is None


def test_report_markdown_escapes_artifact_names() -> None:
    """An artifact folder named a*b|c stays one cell, and literal, in report.md and report.html."""
    entry = _entry("a*b|c_<i>", "result", 22.5, 0.85, {"t1b1s64": [5.0, 5.0]})
    built = report.build([entry], {})
    page = report.to_html(built, {})
    assert "<td>a*b|c_&lt;i&gt;</td>" in page and "<em>" not in page


def test_report_metric_option_and_html_from_markdown(
    bert_fp32: Path, bert_fused: Path, tmp_path: Path
) -> None:
    """--metric names the headline and fails in one line when no artifact reports it; report.html
    is report.md rendered (a real table with a header row, the plots embedded where it links them)."""
    unknown = cli(
        ["report", str(bert_fp32), "--metric", "accuracy", "--runs", "10", "-o", str(tmp_path / "r")]
    )
    assert unknown.exit_code == 3 and "metric 'accuracy' is not reported for every artifact" in unknown.output
    assert not (tmp_path / "r").exists()
    out = tmp_path / "ok"
    assert cli(["report", str(bert_fp32), str(bert_fused), "--runs", "10", "-o", str(out)]).exit_code == 0
    page = (out / "report.html").read_text()
    assert (
        "<h1>edgeslim report</h1>" in page and "<th>artifact</th>" in page and "<td>bert-fused</td>" in page
    )
    assert '<img src="data:image/png;base64,' in page and 'alt="pareto.png"' in page


def test_gate_reuses_the_eval_steps_result_on_the_same_model_and_data(
    balanced_cls: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeslim import evaluation, gate
    from edgeslim.steps import evaluate as eval_step

    evaled = tmp_path / "evaled"
    evaled.mkdir()
    eval_step.run(balanced_cls["artifact"], eval_step.Config(data=str(balanced_cls["own"])), evaled)
    calls: list[Path] = []
    real = evaluation.evaluate

    def counted(artifact: Path, *args: Any) -> dict[str, Any]:
        calls.append(artifact)
        return real(artifact, *args)

    monkeypatch.setattr(evaluation, "evaluate", counted)
    budget = gate.MetricBudget(data=str(balanced_cls["own"]), metric="accuracy", value=0.99)
    assert gate._metric(evaled, budget) == 1.0 and calls == []  # the stored eval.json result
    assert gate._metric(evaled, budget.model_copy(update={"limit": 30})) == 1.0 and len(calls) == 1
    shutil.copy(balanced_cls["negated"] / "model.onnx", evaled / "model.onnx")  # another model
    assert gate._metric(evaled, budget) == 0.0 and len(calls) == 2
