import json
from collections.abc import Callable
from pathlib import Path

from conftest import cli

from edgeslim import artifacts


def _prune(model: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return cli(["prune", str(model), "-o", str(out), *args])


def test_heads_and_ffn_shrink_export_and_fuse(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    result = _prune(model, tmp_path / "p", "--heads", "0.5", "--ffn", "0.5")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    assert record["parameters_after"] < record["parameters_before"]
    assert all(len(h) == 2 for h in record["removed_heads"].values()) and record["ffn_sizes"] == [18, 18]
    from transformers import AutoModelForSequenceClassification

    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p")  # reloads at the new shapes
    block = pruned.bert.encoder.layer[0]
    assert block.attention.self.query.weight.shape == (16, 32) and block.intermediate.dense.weight.shape == (
        18,
        32,
    )
    assert (
        cli(
            ["export", str(tmp_path / "p"), "--task", "sequence-classification", "-o", str(tmp_path / "e")]
        ).exit_code
        == 0
    )  # parity checked against the pruned PyTorch model
    fused = cli(["optimize", str(tmp_path / "e"), "-o", str(tmp_path / "f"), "--require-full-fusion"])
    assert fused.exit_code == 0, fused.output  # every layer's (pruned) attention still fuses
    assert artifacts.read_manifest(tmp_path / "f")["steps"][-1]["fusion"]["kinds"]["attention"]["found"] == 2


def test_taylor_importance_and_layers(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _prune(
        tiny_factory("bert", "seq", 2),
        tmp_path / "p",
        "--heads",
        "0.25",
        "--importance",
        "taylor",
        "--keep-layers",
        "1",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    assert record["kept_layers"] == [1] and list(record["removed_heads"].values()) == [
        record["removed_heads"]["0"]
    ]


def test_prune_with_recovery(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    result = _prune(
        teacher, tmp_path / "p", "--ffn", "0.5", "--recover-with", str(teacher), "--recover-steps", "2"
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"config.json", "model.safetensors", "edgeslim-prune.json", "edgeslim-train.json"} <= names


def test_prune_bad_input(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    for args, needle in (
        (["--heads", "1.0"], "heads"),
        (["--ffn", "0"], "ffn"),
        ([], "nothing to prune"),
        (["--heads", "0.9"], "remove all"),
    ):
        result = _prune(model, tmp_path / "p", *args)
        assert result.exit_code == 3 and needle in result.output, result.output
    result = _prune(tiny_factory("distilbert"), tmp_path / "p", "--heads", "0.5")
    assert result.exit_code == 3 and "supports bert" in result.output
    assert not (tmp_path / "p").exists()


def test_unstructured_magnitude(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _prune(tiny_factory("bert", "seq", 2), tmp_path / "p", "--unstructured", "0.8")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    assert all(0.79 <= v <= 0.81 for v in record["sparsity"].values())
    assert record["zipped_bytes"]["after"] < record["zipped_bytes"]["before"]
    assert "not a speed win" in record["note"]


def test_iterative_cycles_track_metric(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    result = _prune(
        teacher,
        tmp_path / "p",
        "--heads",
        "0.5",
        "--ffn",
        "0.5",
        "--cycles",
        "2",
        "--recover-with",
        str(teacher),
        "--recover-steps",
        "2",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "edgeslim-prune.json").read_text())
    params = [c["parameters"] for c in record["cycles"]]
    assert len(params) == 2 and params[1] < params[0] and "accuracy" in record["cycles"][0]["dev"]
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert all(len(v) == 2 for v in config["pruned_heads"].values())  # 4 -> 3 -> 2 heads, original indices
    assert not list((tmp_path / "p").glob("cycle*"))


def test_pruning_keeps_the_models_head(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _prune(tiny_factory("bert", "tok", 5), tmp_path / "p", "--ffn", "0.5")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and len(config["id2label"]) == 5
