"""The same recipe and seed give byte-identical artifacts; training is bit-identical on CPU."""

from collections.abc import Callable
from pathlib import Path

from conftest import cli

from edgeslim import artifacts


def test_export_optimize_quantize_are_byte_identical(tiny_bert: Path, tmp_path: Path) -> None:
    files = []
    for name in ("a", "b"):  # separate caches: nothing reused between the two runs
        work = tmp_path / name
        work.mkdir()
        recipe = work / "r.yaml"
        recipe.write_text(
            f"name: det\nmodel: {tiny_bert}\noutput: {work / 'out'}\nsteps:\n  - type: export\n"
            "  - type: optimize\n  - type: quantize\n    mode: static\n    calib_size: 32\n"
        )
        assert (result := cli(["run", str(recipe)])).exit_code == 0, result.output
        files.append(artifacts.read_manifest(work / "out")["files"])
    assert files[0] == files[1] and "model.onnx" in files[0]


def test_training_is_bit_identical_at_the_same_thread_count(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_factory("bert", "seq", 2)
    fast = ["--train-size", "64", "--eval-size", "16", "--batch-size", "16", "--max-steps", "6"]
    for name in ("a", "b"):
        result = cli(["finetune", str(model), *fast, "--seed", "3", "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    weights = [(tmp_path / n / "model.safetensors").read_bytes() for n in ("a", "b")]
    assert weights[0] == weights[1]
    other = cli(["finetune", str(model), *fast, "--seed", "4", "-o", str(tmp_path / "c")])
    assert other.exit_code == 0 and (tmp_path / "c" / "model.safetensors").read_bytes() != weights[0]
