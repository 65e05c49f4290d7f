import json
from pathlib import Path

from conftest import cli


def test_parameter_count_matches_pytorch(bert_fp32: Path, bert_fused: Path, tiny_bert: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert)
    used = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler"))
    for artifact in (bert_fp32, bert_fused):  # the unused pooler is not exported
        assert json.loads(cli(["inspect", str(artifact), "--json"]).output)["parameters"] == used


def test_inspect_json(bert_fused: Path, tiny_bert: Path) -> None:
    from transformers import AutoModel

    result = cli(["inspect", str(bert_fused), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    model = AutoModel.from_pretrained(tiny_bert)
    used = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler"))
    assert report["parameters"] == used  # the unused pooler is not exported
    assert report["initializer_bytes"]["FLOAT"] == 4 * used
    assert report["ops"]["Attention"] == 2 and report["quantized_ops"] == {}
    assert report["opset"]["ai.onnx"] == 17
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["inputs"][0]["shape"] == ["batch", "sequence"]
    assert report["fusion"]["full"]
    assert [s["type"] for s in report["manifest"]["steps"]] == ["export", "optimize"]
    assert report["size_bytes"] == (bert_fused / "model.onnx").stat().st_size


def test_inspect_plain_onnx_file_and_text(bert_fused: Path) -> None:
    result = cli(["inspect", str(bert_fused / "model.onnx")])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "attention" in result.output
