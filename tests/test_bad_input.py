"""Each bad input: one-line error, documented exit code, nothing half-written."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli, leftovers


def _fails(args: list[str], code: int, *needles: str) -> str:
    result = cli(args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output  # one line, no traceback
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


def test_missing_model_path(tmp_path: Path) -> None:
    _fails(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "o")], 3, "not found")
    assert not (tmp_path / "o").exists()


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    _fails(["export", str(tmp_path / "m"), "-o", str(tmp_path / "o")], 3, "config.json")


def test_truncated_safetensors(tiny_bert: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    _fails(["export", str(broken), "-o", str(tmp_path / "o")], 3, "truncated")
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_pickle_only_refused_unless_allowed(tiny_bert: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_bert, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    _fails(["export", str(pickled), "-o", str(tmp_path / "o")], 3, "--allow-pickle")
    result = cli(["export", str(pickled), "--allow-pickle", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output


def test_unsupported_architecture(tiny_bert: Path, tmp_path: Path) -> None:
    other = tmp_path / "gpt"
    shutil.copytree(tiny_bert, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    _fails(["export", str(other), "-o", str(tmp_path / "o")], 3, "'gpt2'", "bert, roberta")


def test_unknown_task(tiny_bert: Path, tmp_path: Path) -> None:
    _fails(
        ["export", str(tiny_bert), "--task", "summarize", "-o", str(tmp_path / "o")],
        3,
        "task",
        "feature-extraction",
    )


def test_corrupt_onnx(bert_fp32: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(bert_fp32, art)
    (art / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    _fails(["inspect", str(art)], 3, "not a valid ONNX")
    _fails(["optimize", str(art), "-o", str(tmp_path / "o")], 3)
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _fails(["optimize", str(tmp_path / "d"), "-o", str(tmp_path / "o")], 3, "edgeslim.json")


def test_output_exists_needs_force(bert_fp32: Path, tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("x")
    _fails(["export", str(tiny_bert), "-o", str(out)], 4, "--force")
    assert (out / "keep").exists()
    _fails(["export", str(tiny_bert), "-o", str(out), "--force"], 4, "not written by edgeslim")
    assert (out / "keep").exists()  # --force never deletes a folder edgeslim did not write
    ours = tmp_path / "ours"
    assert cli(["export", str(tiny_bert), "-o", str(ours)]).exit_code == 0
    (ours / "keep").write_text("x")
    assert cli(["export", str(tiny_bert), "-o", str(ours), "--force"]).exit_code == 0
    assert not (ours / "keep").exists() and (ours / "model.onnx").exists()


def test_output_not_writable(tiny_bert: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _fails(["export", str(tiny_bert), "-o", str(tmp_path / "file" / "o")], 4, "cannot write")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    from edgeslim.errors import InputError

    result = cli(["--debug", "export", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)


@pytest.mark.parametrize("field", ["opset"])
def test_bad_option_value(tiny_bert: Path, tmp_path: Path, field: str) -> None:
    _fails(["export", str(tiny_bert), f"--{field}", "9", "-o", str(tmp_path / "o")], 3, field)


def test_failure_during_export_leaves_nothing(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeslim import parity
    from edgeslim.errors import ParityError

    def broken(*args: object, **kwargs: object) -> None:
        raise ParityError("ONNX Runtime differs from PyTorch: forced")

    monkeypatch.setattr(parity, "check_artifact", broken)
    _fails(["export", str(tiny_bert), "-o", str(tmp_path / "o")], 5, "forced")
    assert list(tmp_path.iterdir()) == []


def test_fixture_factory_is_cached(tiny_factory: Callable[..., Path]) -> None:
    assert tiny_factory("bert") == tiny_factory("bert")
