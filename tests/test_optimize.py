from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import cli, leftovers

from edgeslim import artifacts, inspection, parity


def test_tiny_bert_fuses_fully(bert_fused: Path) -> None:
    step = artifacts.read_manifest(bert_fused)["steps"][-1]
    kinds = step["fusion"]["kinds"]
    assert kinds["attention"] == {"expected": 2, "found": 2, "status": "full"}
    assert kinds["skip_layer_norm"]["found"] == 4 and kinds["embed_layer_norm"]["found"] == 1
    assert step["fusion"]["full"] and step["parity"]["max_abs_diff"] <= 1e-4
    assert (bert_fused / "reference.npz").exists() and (bert_fused / "vocab.txt").exists()
    ops = Counter(n.op_type for n in inspection.load_graph(bert_fused / "model.onnx").graph.node)
    assert (ops["Attention"], ops["SkipLayerNormalization"], ops["EmbedLayerNormalization"]) == (2, 4, 1)
    assert "Softmax" not in ops  # the record matches the graph: no unfused attention left
    assert list(step["phases_s"]) == ["fuse", "parity"]  # one pass: fused fully, parity held


def test_unfusable_attention_fails_require_full_fusion(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    exported = tmp_path / "deberta"
    assert cli(["export", str(tiny_factory("deberta-v2")), "-o", str(exported)]).exit_code == 0
    result = cli(["optimize", str(exported), "-o", str(tmp_path / "fused"), "--require-full-fusion"])
    assert result.exit_code == 5
    assert "attention 0/2" in result.output and "no fused attention" in result.output
    assert not (tmp_path / "fused").exists() and leftovers(tmp_path) == []
    assert cli(["optimize", str(exported), "-o", str(tmp_path / "fused")]).exit_code == 0


def test_optimum_loads_artifacts(bert_fused: Path, tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification

    cases, outputs = parity.load_reference(bert_fused / "reference.npz")
    model = ORTModelForFeatureExtraction.from_pretrained(bert_fused, file_name="model.onnx")
    got = model(**{k: __import__("torch").from_numpy(v) for k, v in cases[0].items()})
    np.testing.assert_allclose(got.last_hidden_state.numpy(), outputs[0]["last_hidden_state"], atol=1e-4)

    cls = tmp_path / "cls"
    model_dir = tiny_factory("bert", "seq", 2)
    assert cli(["export", str(model_dir), "--task", "sequence-classification", "-o", str(cls)]).exit_code == 0
    classifier = ORTModelForSequenceClassification.from_pretrained(cls, file_name="model.onnx")
    ref_cases, ref_out = parity.load_reference(cls / "reference.npz")
    torch = __import__("torch")
    logits = classifier(**{k: torch.from_numpy(v) for k, v in ref_cases[0].items()}).logits
    np.testing.assert_allclose(logits.numpy(), ref_out[0]["logits"], atol=1e-4)
