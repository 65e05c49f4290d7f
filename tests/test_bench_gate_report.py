import json
import xml.etree.ElementTree as ET
from pathlib import Path

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
    cell = data["cells"][0]
    for key in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "throughput_seq_s", "speedup_ci95"):
        assert key in cell
    assert len(cell["samples_ms"]) == 5 and cell["p99_ms"] >= cell["median_ms"]
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


def test_gate_passes_and_fails(bert_fused: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ok = _budgets(
        tmp_path,
        "max_size_mb: 10\nmax_params: 1000000\nfusion: {attention: full}\n"
        "latency:\n  - {ep: cpu, threads: 1, batch: 1, seq: 8, max_p50_ms: 100000, runs: 10}\n",
    )
    result = cli(["gate", str(bert_fused), "--budgets", str(ok)])
    assert result.exit_code == 0, result.output
    assert "| max_size_mb |" in result.output and "FAIL" not in result.output
    bad = _budgets(tmp_path, "max_size_mb: 0.001\nmax_params: 1000000\n")
    junit = tmp_path / "gate.xml"
    result = cli(["gate", str(bert_fused), "--budgets", str(bad), "--junit", str(junit)])
    assert result.exit_code == 6 and "max_size_mb" in result.output
    suite = ET.parse(junit).getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["max_size_mb"] and suite.get("tests") == "2"
    assert summary.read_text().count("## edgeslim gate") == 2


def test_gate_metric_budgets(cls_artifact: Path, tmp_path: Path) -> None:
    art = cls_artifact
    budgets = _budgets(
        tmp_path,
        f"min_metric: {{data: 'sst2:dev', metric: accuracy, value: 0.0, limit: 50}}\n"
        f"max_drop: {{reference: {art}, data: 'sst2:dev', metric: accuracy, value: 0.0, limit: 50}}\n",
    )
    result = cli(["gate", str(art), "--budgets", str(budgets), "--json"])
    assert result.exit_code == 0, result.output
    rows = _json(result.output)["budgets"]
    assert [r["budget"] for r in rows] == ["min_metric.accuracy", "max_drop.accuracy"]
    assert rows[1]["actual"] == "0.0000"


def test_gate_baseline_is_noise_aware(bert_fused: Path, tmp_path: Path) -> None:
    stored = _json(cli(["bench", str(bert_fused), *FAST, "--runs", "10", "--json"]).output)
    for factor, code in ((1e-4, 6), (1e4, 0)):  # an impossibly fast / slow stored baseline
        cells = [{**c, "samples_ms": [x * factor for x in c["samples_ms"]]} for c in stored["cells"]]
        (tmp_path / "baseline.json").write_text(json.dumps({**stored, "cells": cells}))
        budgets = _budgets(tmp_path, "baseline: {file: baseline.json, max_latency_regression: 0.05}\n")
        result = cli(["gate", str(bert_fused), "--budgets", str(budgets)])
        assert result.exit_code == code, result.output


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
