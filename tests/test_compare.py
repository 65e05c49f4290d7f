"""tools/compare.py on a tiny seeded classifier: every row, ratios, metrics, plot, preset choice."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeslim import data, evaluation, hardware


def _tool() -> object:
    """tools/compare.py as a module (tools/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / "compare.py"
    spec = importlib.util.spec_from_file_location("edgeslim_tools_compare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


compare: Any = _tool()

RATIO = re.compile(r"^(\d+\.\d+) \[(\d+\.\d+), (\d+\.\d+)\]$")


@pytest.mark.parametrize(
    ("machine", "flags", "preset"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),
        ("x86_64", {"avx2", "avx_vnni"}, "avx512_vnni"),
        ("x86_64", {"avx2", "avx512f"}, "avx2"),
        ("x86_64", {"avx2"}, "avx2"),
        ("aarch64", {"asimd", "asimddp"}, "arm64"),
    ],
)
def test_optimum_preset_follows_cpu_flags(machine: str, flags: set[str], preset: str) -> None:
    assert compare.optimum_preset(hardware.from_facts(machine, flags)) == preset


def test_pareto_front() -> None:
    # (latency, size): (3, 5) is beaten by (2, 4); lower size is better
    assert compare.pareto_front([(1, 9), (2, 4), (3, 5), (5, 1)], higher_is_better=False) == [0, 1, 3]
    # (latency, accuracy): (2, 0.7) is beaten by (1, 0.8)
    assert compare.pareto_front([(1, 0.8), (2, 0.7), (3, 0.9)], higher_is_better=True) == [0, 2]


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--out", str(tmp_path / "o"), "--preset", "avx2"]
    code = compare.main(["--teacher", str(tmp_path / "nope"), *common])
    assert code == 3 and "not found" in capsys.readouterr().err
    code = compare.main(["--teacher", "x", "--cells", "b1x128", *common])
    assert code == 3 and "bBATCHsSEQ" in capsys.readouterr().err
    code = compare.main(["--teacher", "x", "--artifact", str(tmp_path), *common])
    assert code == 3 and "no edgeslim.json" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    code = compare.main(["--teacher", "x", *common])
    assert code == 4 and "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # nothing left behind


def test_compare_end_to_end(balanced_cls: dict[str, Path], tmp_path: Path) -> None:
    teacher = balanced_cls["artifact"].parent / "artifact-hf"
    out = tmp_path / "compare"
    args = ["--teacher", str(teacher), "--artifact", str(balanced_cls["artifact"]), "--data"]
    args += [str(balanced_cls["own"]), "--out", str(out), "--runs", "3", "--warmup", "1"]
    args += ["--cells", "b2s16", "--threads", "1", "--bootstrap", "50", "--preset", "avx2", "--no-olive"]
    assert compare.main(args) == 0  # Olive left out: the same rows whether or not it is installed
    md = (out / "compare.md").read_text()
    result = json.loads((out / "compare.json").read_text())
    names = ["PyTorch fp32 eager", "ORT fp32", "Optimum int8", "Olive int8", "edgeslim artifact"]
    table = [line.split(" | ") for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    shown = [re.split(r" \(|:", cells[0].removeprefix("| "))[0] for cells in table[1:]]
    assert shown == names
    assert "preset avx2" in md and "## batch 2 x seq 16" in md
    # the O2 graph of this optimum/onnxruntime pair cannot be quantized (shared/MEASURED.md): said so
    assert "Optimum int8 (plain export: O2 not quantizable)" in md or "Optimum int8 (O2 graph)" in md
    rows = {r["name"]: r for r in result["rows"]}
    cells = {c["model"]: c for c in result["cells"]}
    olive = rows["Olive int8"]
    assert olive["missing"] == "skipped (--no-olive)" and "Olive int8: skipped" in md
    assert set(cells) == {n for n in names if not rows[n]["missing"]}
    for line in table[1:]:
        if "–" in line[1]:
            continue
        ratio, model = line[4], re.split(r" \(|:", line[0].removeprefix("| "))[0]
        if model == "Optimum int8":
            assert ratio == "1 (baseline)"
            continue
        value, low, high = map(float, RATIO.match(ratio).groups())  # type: ignore[union-attr]
        assert 0 < low <= high
        samples = np.asarray(cells[model]["samples_ms"])
        base = np.asarray(cells["Optimum int8"]["samples_ms"])
        assert value == pytest.approx(np.median(samples) / np.median(base), rel=0.03)
    # labels are the fp32 artifact's own predictions (no near-ties): every fp32 row scores 1.0,
    # the int8 rows mostly; parameters: ONNX initializers of the fp32 export = PyTorch's
    for name in ("PyTorch fp32 eager", "ORT fp32", "edgeslim artifact"):
        assert rows[name]["metric"]["value"] == 1.0, name
    int8 = [rows["Optimum int8"], *([] if olive["missing"] else [olive])]
    assert all(r["metric"]["value"] >= 0.6 for r in int8)  # a 32-wide model loses some to int8
    assert rows["ORT fp32"]["params"] == rows["PyTorch fp32 eager"]["params"]
    assert Path(rows["Optimum int8"]["model"]).is_file()  # recorded where it is after the rename
    assert rows["Optimum int8"]["mb"] < rows["ORT fp32"]["mb"]
    examples = data.load_labelled(str(balanced_cls["own"]), None, None, None, None)
    reference = evaluation.evaluate(balanced_cls["artifact"], examples, bootstrap=50)
    assert rows["edgeslim artifact"]["metric"]["value"] == reference["metrics"]["accuracy"]["value"]
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_force_replaces_only_a_compare_output(tmp_path: Path) -> None:
    from edgeslim.errors import OutputError

    compare.check_out(tmp_path / "new", force=False)  # absent: fine
    with pytest.raises(OutputError, match="already exists"):
        compare.check_out(tmp_path, force=False)
    with pytest.raises(OutputError, match="not written by compare"):
        compare.check_out(tmp_path, force=True)
    (tmp_path / "compare.json").write_text("{}")
    compare.check_out(tmp_path, force=True)


def test_olive_row_says_why_when_not_installed(
    balanced_cls: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "olive", None)  # import olive... raises ImportError
    monkeypatch.setitem(sys.modules, "olive.workflows", None)
    teacher = balanced_cls["artifact"].parent / "artifact-hf"
    row = compare.build_olive(teacher, "sequence-classification", tmp_path)
    assert row.missing.startswith("not installed") and "pip install olive-ai" in row.missing
