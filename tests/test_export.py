import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, leftovers, ort_outputs

from edgeslim import artifacts, parity, sessions
from edgeslim.errors import ParityError

ARCHS = ["bert", "roberta", "distilbert", "electra", "xlm-roberta", "deberta-v2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_every_architecture_with_parity(
    arch: str, tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / arch
    result = cli(["export", str(tiny_factory(arch)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = artifacts.read_manifest(out)
    export = manifest["steps"][0]
    shapes = [c["shape"] for c in export["parity"]["cases"]]
    assert shapes[0] == "3x17" and shapes[1].startswith("1x")  # shapes tracing never saw (2x8)
    assert export["parity"]["max_abs_diff"] <= 1e-4
    assert manifest["model_type"] == arch and manifest["source"]["sha256"]
    assert {"torch", "onnxruntime", "transformers"} <= set(export["versions"])
    assert list(export["phases_s"]) == [
        "import",
        "load",
        "export",
        "reference",
        "parity",
    ]  # tools/bench_export.py
    assert (
        all(v >= 0 for v in export["phases_s"].values())
        and export["duration_s"] == export["phases_s"]["export"]
    )
    assert ("token_type_ids" in manifest["inputs"]) == (arch in ("bert", "electra"))
    for name in ("model.onnx", "config.json", "vocab.txt", "reference.npz", "edgeslim.json"):
        assert (out / name).exists(), name
    assert leftovers(tmp_path) == []
    # and independently of edgeslim's own parity record: the source checkpoint in transformers
    from transformers import AutoModel, AutoTokenizer

    texts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13 w14"]  # batch 3, padded
    batch = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    source = AutoModel.from_pretrained(tiny_factory(arch)).eval()
    feeds = {k: v for k, v in batch.items() if k in source.forward.__code__.co_varnames}
    with torch.no_grad():
        want = source(**feeds).last_hidden_state.numpy()
    got = ort_outputs(out, texts)["last_hidden_state"]
    mask = batch["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-4)


def test_max_length_case_uses_model_limit(bert_fp32: Path) -> None:
    shapes = [c["shape"] for c in artifacts.read_manifest(bert_fp32)["steps"][0]["parity"]["cases"]]
    assert shapes == ["3x17", "1x64"]  # tiny model: 64 positions


@pytest.mark.parametrize(
    ("head", "task", "labels", "shape"),
    [
        ("seq", "sequence-classification", 3, lambda b, t: (b, 3)),
        ("tok", "token-classification", 5, lambda b, t: (b, t, 5)),
        ("base", "regression", 1, lambda b, t: (b, 1)),
    ],
)
def test_task_heads(
    head: str,
    task: str,
    labels: int,
    shape: Callable[[int, int], tuple[int, ...]],
    tiny_factory: Callable[..., Path],
    tmp_path: Path,
) -> None:
    model = tiny_factory("bert", head, labels)
    result = cli(["export", str(model), "--task", task, "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    sess = sessions.session(tmp_path / "a" / "model.onnx")
    ids = np.full((2, 9), 7, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    logits = sessions.run(sess, feeds)["logits"]
    assert logits.shape == shape(2, 9)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    if task == "regression":
        assert len(config["id2label"]) == 1 and config["problem_type"] == "regression"


def test_cls_pooling(tiny_bert: Path, tmp_path: Path) -> None:
    result = cli(["export", str(tiny_bert), "--pooling", "cls", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    cases, outputs = parity.load_reference(tmp_path / "a" / "reference.npz")
    for out in outputs:
        np.testing.assert_allclose(out["sentence_embedding"], out["last_hidden_state"][:, 0])


def test_mean_pooling_ignores_padding(bert_fp32: Path) -> None:
    cases, outputs = parity.load_reference(bert_fp32 / "reference.npz")
    feeds, out = cases[0], outputs[0]
    mask = feeds["attention_mask"][..., None]
    expected = (out["last_hidden_state"] * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(out["sentence_embedding"], expected, atol=1e-5)
    assert (feeds["attention_mask"] == 0).any()  # the batch really has padding


def test_external_data(tiny_bert: Path, tmp_path: Path) -> None:
    from edgeslim.steps import run_single
    from edgeslim.steps.export import Config

    out = tmp_path / "ext"
    run_single(str(tiny_bert), Config(external_data_threshold_mb=0.01), out, force=False)
    assert (out / "model.onnx_data").exists()
    assert (out / "model.onnx").stat().st_size < 100_000
    assert artifacts.read_manifest(out)["steps"][0]["external_data"] is True
    report = cli(["inspect", str(out), "--json"])
    data = json.loads(report.output)
    assert data["external_data"] and data["size_bytes"] > (out / "model.onnx_data").stat().st_size
    optimized = cli(["optimize", str(out), "-o", str(tmp_path / "ext-fused")])
    assert optimized.exit_code == 0, optimized.output
    assert len(artifacts.model_files(tmp_path / "ext-fused")) == 2


def test_dynamo_exporter_is_selectable(tiny_bert: Path, tmp_path: Path) -> None:
    result = cli(
        ["export", str(tiny_bert), "--exporter", "dynamo", "--opset", "18", "-o", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    assert artifacts.read_manifest(tmp_path / "d")["steps"][0]["parity"]["max_abs_diff"] <= 1e-4


def test_parity_collects_every_mismatch() -> None:
    ids = np.zeros((1, 4), dtype=np.int64)
    want = [
        {"a": np.zeros((1, 4), np.float32), "b": np.ones((1, 2), np.float32), "c": np.ones(3, np.float32)}
    ]
    got = [
        {"a": np.full((1, 4), 0.5, np.float32), "b": np.ones((1, 3), np.float32), "c": np.ones(3, np.float32)}
    ]
    with pytest.raises(ParityError) as info:
        parity.compare(want, got, [{"input_ids": ids}], atol=1e-4, rtol=0)
    message = str(info.value)
    assert "'a' max abs diff 0.5" in message and "'b' shape" in message and "'c'" not in message


def test_plain_onnxruntime_loads_artifact(bert_fused: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bert_fused / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
