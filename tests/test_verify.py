"""edgeslim verify, and the verification gate and bench run first; hostile budgets and bench
options; --ep-library names; output files checked before any work."""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli

from edgeslim import artifacts, bench, inspection, providers, verify
from edgeslim.errors import InputError

FAST = ["--threads", "1", "--batch", "1", "--seq", "8", "--runs", "5", "--warmup", "1"]


@pytest.fixture(scope="module")
def bert_ext(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT exported with its weights in model.onnx_data."""
    out = tmp_path_factory.mktemp("ext") / "bert-ext"
    result = cli(["export", str(tiny_bert), "-o", str(out), "--external-data"])
    assert result.exit_code == 0, result.output
    assert (out / artifacts.EXTERNAL_DATA).stat().st_size > 10_000
    return out


def _copy(src: Path, tmp_path: Path, name: str = "art") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _problems(art: Path) -> list[str]:
    result = cli(["verify", str(art)])
    assert result.exit_code == 3, result.output
    lines = [
        line.removeprefix("problem: ") for line in result.output.splitlines() if line.startswith("problem:")
    ]
    assert f"{len(lines)} problem(s)" in result.output  # the one-line summary counts them all
    return lines


def test_verify_passes_fresh_artifacts(bert_fp32: Path, bert_ext: Path) -> None:
    for art in (bert_fp32, bert_ext):
        result = cli(["verify", str(art), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["ok"] is True and report["problems"] == []
        assert {"manifest", "references", "symlinks", "external data", "onnxruntime load"} <= set(
            report["checks"]
        )
    assert inspection.external_refs(_graph(bert_ext))  # the external case really has external tensors
    assert not inspection.external_refs(_graph(bert_fp32))


def _graph(art: Path):  # type: ignore[no-untyped-def]
    return inspection.load_graph(art / artifacts.MODEL)


def _truncate_model(art: Path) -> None:
    data = (art / artifacts.MODEL).read_bytes()
    (art / artifacts.MODEL).write_bytes(data[: len(data) // 2])


def _unknown_op(art: Path) -> None:
    import onnx

    model = onnx.load(str(art / artifacts.MODEL))
    model.graph.node[0].op_type = "NoSuchOp"  # still parses; onnxruntime refuses it
    onnx.save(model, str(art / artifacts.MODEL))


def _relocate(art: Path, location: str) -> None:
    import onnx

    model = onnx.load(str(art / artifacts.MODEL), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(art / artifacts.MODEL))


def _outside_location(art: Path) -> None:
    # the data really is there, one level up: onnxruntime would read it; verify must not
    shutil.copy(art / artifacts.EXTERNAL_DATA, art.parent / "outside.bin")
    _relocate(art, "../outside.bin")


def _missing_data(art: Path) -> None:
    (art / artifacts.EXTERNAL_DATA).unlink()


def _short_data(art: Path) -> None:
    data = (art / artifacts.EXTERNAL_DATA).read_bytes()
    (art / artifacts.EXTERNAL_DATA).write_bytes(data[:1000])


def _symlink_out(art: Path) -> None:
    outside = art.parent / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    os.symlink(outside, art / "extra")  # a folder
    os.symlink(outside / "secret.txt", art / "notes.txt")  # a file
    os.symlink("loop", art / "loop")  # points at itself


CORRUPTIONS: list[tuple[str, bool, Callable[[Path], None], list[str]]] = [
    ("truncated model", False, _truncate_model, ["model.onnx is not a valid ONNX file"]),
    ("unloadable model", False, _unknown_op, ["cannot be loaded by onnxruntime", "NoSuchOp"]),
    ("location outside", True, _outside_location, ["'../outside.bin'", "outside the artifact"]),
    ("missing data file", True, _missing_data, ["'model.onnx_data'", "file is missing"]),
    ("short data file", True, _short_data, ["file has 1000 bytes", "cut off"]),
    (
        "symlinks out",
        False,
        _symlink_out,
        ["extra: symlink to", "notes.txt: symlink to", "loop: symlink loop"],
    ),
]


@pytest.mark.parametrize(
    ("external", "corrupt", "needles"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_verify_detects_corruption(
    external: bool,
    corrupt: Callable[[Path], None],
    needles: list[str],
    bert_fp32: Path,
    bert_ext: Path,
    tmp_path: Path,
) -> None:
    art = _copy(bert_ext if external else bert_fp32, tmp_path)
    assert cli(["verify", str(art)]).exit_code == 0
    corrupt(art)
    text = "\n".join(_problems(art))
    for needle in needles:
        assert needle in text, text
    # the library call agrees, and the error of require() carries every problem on one line
    with pytest.raises(verify.ArtifactInvalid) as err:
        verify.require(art)
    assert "\n" not in str(err.value) and all(n in str(err.value) for n in needles)


def test_verify_lists_every_problem(bert_fp32: Path, tmp_path: Path) -> None:
    art = _copy(bert_fp32, tmp_path)
    (art / "config.json").write_text("[1, 2]")
    (art / "vocab.txt").unlink()
    os.symlink("/", art / "root")
    problems = _problems(art)
    assert sorted(problems) == [
        "config.json: a JSON list, expected an object",
        "config.json: sha256 differs from the manifest (changed or corrupt)",
        "root: symlink to /, outside the artifact (replace it with a copy of the file)",
        "vocab.txt: a tokenizer file named by the manifest is missing",
        "vocab.txt: listed in the manifest but missing",
    ]


def test_verify_hashes(bert_fp32: Path, tmp_path: Path) -> None:
    art = _copy(bert_fp32, tmp_path)
    result = cli(["verify", str(art), "--json"])
    assert result.exit_code == 0 and "hashes" in json.loads(result.output)["checks"], result.output
    manifest = json.loads((art / artifacts.MANIFEST).read_text())
    assert manifest[verify.HASHES] == artifacts.file_hashes(art)  # what export recorded
    assert {artifacts.MODEL, "config.json", "vocab.txt"} <= set(manifest[verify.HASHES])
    (art / ".lock").write_text("1")  # hidden files are neither hashed nor a problem
    with (art / "vocab.txt").open("a") as handle:
        handle.write("extra\n")
    (art / "reference.npz").unlink()
    assert _problems(art) == [
        "reference.npz: listed in the manifest but missing",
        "vocab.txt: sha256 differs from the manifest (changed or corrupt)",
    ]
    # an artifact from before hashes were recorded: a warning, not a failure
    shutil.copy(bert_fp32 / "reference.npz", art / "reference.npz")
    artifacts.write_json(art / artifacts.MANIFEST, {k: v for k, v in manifest.items() if k != verify.HASHES})
    result = cli(["verify", str(art)])
    assert result.exit_code == 0 and "warning: no file hashes" in result.output, result.output


def test_verify_bad_targets(bert_fp32: Path, tmp_path: Path) -> None:
    assert cli(["verify", str(tmp_path / "nope")]).exit_code == 3
    art = _copy(bert_fp32, tmp_path)
    (art / artifacts.MANIFEST).write_text("[]")
    assert any("JSON list" in p for p in _problems(art))
    (art / artifacts.MANIFEST).unlink()
    assert any("edgeslim.json: missing" in p for p in _problems(art))
    # a bare .onnx file: graph, external data and load only
    assert cli(["verify", str(bert_fp32 / artifacts.MODEL)]).exit_code == 0


def _budgets(tmp_path: Path, text: str, name: str = "b.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_gate_and_inspect_refuse_missing_external_data(bert_ext: Path, tmp_path: Path) -> None:
    art = _copy(bert_ext, tmp_path)
    size_only = _budgets(tmp_path, "max_size_mb: 100\n")
    assert cli(["gate", str(art), "--budgets", str(size_only)]).exit_code == 0
    assert cli(["inspect", str(art)]).exit_code == 0
    _missing_data(art)
    result = cli(["gate", str(art), "--budgets", str(size_only)])
    assert result.exit_code == 3 and "failed verification" in result.output, result.output
    assert "| max_size_mb |" not in result.output  # nothing was checked or reported as passing
    result = cli(["inspect", str(art)])
    assert result.exit_code == 3 and "model.onnx_data" in result.output, result.output


def test_bench_verifies_first(bert_ext: Path, tmp_path: Path) -> None:
    art = _copy(bert_ext, tmp_path)
    _outside_location(art)
    out = tmp_path / "r.json"
    result = cli(["bench", str(art), *FAST, "--out", str(out)])
    assert result.exit_code == 3 and "outside the artifact" in result.output, result.output
    assert not out.exists() and "bench: threads" not in result.output


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no budget is set"),
        ("# only a comment\n# and another\n", "no budget is set"),
        ("max_size_mb:\n", "no budget is set"),
        ("latency:\n  - {threads: 1}\n", "needs max_p50_ms or max_p95_ms"),
        ("max_size_mb: 12 MB\n", "max_size_mb"),
        ("max_size_mb: true\n", "max_size_mb"),
        ("max_size_mb: 12000000\n", "max_size_mb"),  # bytes where MB belong
        ("max_params: 1.5\n", "max_params"),
        ("latency:\n  - {max_p50_ms: 5ms}\n", "latency.0.max_p50_ms"),
        ("latency:\n  - {max_p50_ms: 5, threads: '2'}\n", "latency.0.threads"),
    ],
    ids=[
        "empty",
        "comments",
        "null",
        "latency-without-limit",
        "units",
        "bool",
        "bytes",
        "float-params",
        "ms-string",
        "threads-string",
    ],
)
def test_gate_refuses_budgets(text: str, needle: str, bert_fp32: Path, tmp_path: Path) -> None:
    result = cli(["gate", str(bert_fp32), "--budgets", str(_budgets(tmp_path, text))])
    assert result.exit_code == 3 and needle in result.output, result.output
    assert "| budget |" not in result.output


@pytest.mark.parametrize(
    ("stored", "needle"),
    [
        ([1, 2], "is a JSON list, not an object"),
        ({"schema": bench.SCHEMA, "ep": "CPUExecutionProvider", "baseline": "a"}, "cells"),
        (
            {
                "schema": bench.SCHEMA,
                "ep": "CPUExecutionProvider",
                "baseline": "a",
                "cells": [{"model": "a"}],
            },
            "cells.0.threads",
        ),
        ({"schema": bench.SCHEMA, "ep": "WarpExecutionProvider", "baseline": "a", "cells": []}, "unknown ep"),
    ],
    ids=["list", "no-cells", "cell-keys", "unknown-ep"],
)
def test_gate_refuses_bad_baseline(stored: object, needle: str, bert_fp32: Path, tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps(stored))
    budgets = _budgets(tmp_path, "baseline: {file: base.json}\n")
    result = cli(["gate", str(bert_fp32), "--budgets", str(budgets)])
    assert result.exit_code == 3 and needle in result.output, result.output


def test_gate_junit_folder(bert_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documented: --junit creates missing folders; an unwritable place is exit 4 before any work."""
    from edgeslim import gate

    budgets = _budgets(tmp_path, "max_size_mb: 100\n")
    junit = tmp_path / "reports" / "ci" / "gate.xml"
    result = cli(["gate", str(bert_fp32), "--budgets", str(budgets), "--junit", str(junit)])
    assert result.exit_code == 0, result.output
    assert junit.is_file() and 'tests="1"' in junit.read_text()
    checked: list[Path] = []
    monkeypatch.setattr(gate, "check", lambda art, b: checked.append(art) or [])
    (tmp_path / "file").write_text("in the way")
    for bad in (tmp_path / "file" / "gate.xml", tmp_path / "reports"):
        result = cli(["gate", str(bert_fp32), "--budgets", str(budgets), "--junit", str(bad)])
        assert result.exit_code == 4, result.output
    assert checked == []  # refused before any work


@pytest.mark.parametrize("option", ["--threads", "--batch", "--seq"])
def test_bench_refuses_zero(option: str, bert_fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = [*FAST, option, "0", "--out", str(out)]
    result = cli(["bench", str(bert_fp32), *args])
    assert result.exit_code == 3 and option in result.output, result.output
    assert not out.exists()
    from edgeslim.config import make_config
    from edgeslim.steps.benchmark import Config

    with pytest.raises(InputError, match=option.removeprefix("--")):  # recipes too
        make_config(Config, **{option.removeprefix("--"): (1, 0)})


def test_bench_out_folder_created(bert_fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "r.json"
    assert cli(["bench", str(bert_fp32), *FAST, "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["schema"] == bench.SCHEMA
    (tmp_path / "file").write_text("x")
    assert cli(["bench", str(bert_fp32), *FAST, "--out", str(tmp_path / "file" / "r.json")]).exit_code == 4


def test_bench_ep_library_names(bert_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = tmp_path / "libplugin.so"
    library.write_bytes(b"\x7fELF")
    registered: list[str] = []
    monkeypatch.setattr(providers, "register_plugin", lambda name, lib: registered.append(name) or name)
    result = cli(["bench", str(bert_fp32), *FAST, "--ep-library", f"warp={library}"])
    assert result.exit_code == 3 and "unknown execution provider 'warp'" in result.output, result.output
    assert "openvino (OpenVINOExecutionProvider)" in result.output and registered == []
    # a known short name registers under onnxruntime's name and benches on it, never on CPU
    result = cli(["bench", str(bert_fp32), *FAST, "--ep-library", f"openvino={library}"])
    assert registered == ["OpenVINOExecutionProvider"]
    assert result.exit_code == 7 and "OpenVINOExecutionProvider is not available" in result.output, (
        result.output
    )
    assert cli(["bench", str(bert_fp32), *FAST, "--ep-library", f"cpu={library}"]).exit_code == 3


def test_bench_placement_honours_allow_fallback(bert_fp32: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def placement(model: Path, ep: str, feeds: dict, allow_fallback: bool = False) -> dict[str, int]:
        seen.append(allow_fallback)
        return {ep: 1}

    monkeypatch.setattr(providers, "node_placement", placement)
    model = {"a": bert_fp32 / artifacts.MODEL}
    for allow in (True, False):
        bench.run_grid(model, "cpu", [1], [1], [8], 5, 0, 0.0, allow_fallback=allow)
    assert seen == [True, False]
