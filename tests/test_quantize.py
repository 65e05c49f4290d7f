import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, leftovers, ort_outputs

from edgeslim import artifacts, evaluation, inspection


def _ops(artifact: Path) -> dict[str, int]:
    return json.loads(cli(["inspect", str(artifact), "--json"]).output)["ops"]


def _quantize(src: Path, out: Path, *args: str) -> dict:
    result = cli(["quantize", str(src), "-o", str(out), "--fidelity-data", "sst2:dev", *args])
    assert result.exit_code == 0, result.output
    return artifacts.read_manifest(out)["steps"][-1]


def _sqnr_here(reference: Path, quantized: Path) -> float:
    """SQNR (dB) of the sentence embeddings on 40 in-vocabulary texts, computed here."""
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(90)}" for _ in range(rng.randint(2, 12))) for _ in range(40)]
    a, b = (
        ort_outputs(art, texts)["sentence_embedding"].astype(np.float64) for art in (reference, quantized)
    )
    return float(10 * np.log10((a**2).sum() / ((a - b) ** 2).sum()))


def test_dynamic_int8(bert_fused: Path, tmp_path: Path) -> None:
    step = _quantize(bert_fused, tmp_path / "q")
    ops = _ops(tmp_path / "q")
    assert ops.get("DynamicQuantizeLinear", 0) > 0 and ops.get("MatMulInteger", 0) >= 4
    assert ops.get("QAttention") == 2 and "MatMul" not in ops  # every MatMul quantized
    assert step["fidelity"]["sentence_embedding"]["sqnr_db"] > 15
    assert step["fidelity"]["sentence_embedding"]["cosine_mean"] > 0.98
    here = _sqnr_here(bert_fused, tmp_path / "q")  # the recorded figure is a real measurement
    assert here < 100 and step["fidelity"]["sentence_embedding"]["sqnr_db"] == pytest.approx(here, abs=5)
    assert step["defaults"]["per_channel"] is True and step["fidelity_data"]["n"] == 200
    assert [row["index"] for row in step["layer_sqnr"]] == list(range(len(step["layer_sqnr"])))


def test_dynamic_skip_lists(bert_fused: Path, tmp_path: Path) -> None:
    _quantize(bert_fused, tmp_path / "q", "--exclude-op", "Attention")
    ops = _ops(tmp_path / "q")
    assert "QAttention" not in ops and ops["Attention"] == 2
    graph = inspection.load_graph(bert_fused / "model.onnx").graph
    first = next(n.name for n in graph.node if n.op_type == "MatMul")
    _quantize(bert_fused, tmp_path / "q2", "--exclude", first)
    assert _ops(tmp_path / "q2")["MatMul"] == 1


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile", "distribution"])
def test_static_qdq_methods(bert_fused: Path, tmp_path: Path, method: str) -> None:
    # sst2:train sentences differ in length: Percentile/Entropy used to crash on that
    step = _quantize(bert_fused, tmp_path / "q", "--mode", "static", "--method", method, "--calib-size", "40")
    ops = _ops(tmp_path / "q")
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert step["fidelity"]["sentence_embedding"]["sqnr_db"] > 10


def test_static_keeps_post_gelu_matmuls_fp32(bert_fused: Path, tmp_path: Path) -> None:
    _quantize(bert_fused, tmp_path / "q", "--mode", "static", "--calib-size", "16")
    graph = inspection.load_graph(tmp_path / "q" / "model.onnx").graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    fed_by_gelu = [n for n in graph.node if n.op_type == "MatMul" and producers.get(n.input[0]) == "BiasGelu"]
    assert len(fed_by_gelu) == 2  # one per layer, input straight from GELU, not DequantizeLinear


def test_static_qoperator(bert_fused: Path, tmp_path: Path) -> None:
    _quantize(bert_fused, tmp_path / "q", "--mode", "static", "--format", "qoperator", "--calib-size", "16")
    assert _ops(tmp_path / "q").get("QLinearMatMul", 0) >= 2


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_only(bert_fused: Path, tmp_path: Path, bits: int) -> None:
    step = _quantize(bert_fused, tmp_path / "q", "--mode", "weight-only", "--bits", str(bits))
    ops = _ops(tmp_path / "q")
    assert ops["MatMulNBits"] == 6 and "MatMul" not in ops  # 3 per layer; QKV sit in Attention
    assert any("size win" in n for n in step["notes"]) and any("Q/K/V" in n for n in step["notes"])
    if bits == 8:
        assert step["fidelity"]["sentence_embedding"]["sqnr_db"] > 25


def test_weight_only_hqq(bert_fused: Path, tmp_path: Path) -> None:
    step = _quantize(bert_fused, tmp_path / "q", "--mode", "weight-only", "--algorithm", "hqq", "--bits", "4")
    assert _ops(tmp_path / "q")["MatMulNBits"] == 6
    assert step["fidelity"]["sentence_embedding"]["sqnr_db"] > 5


def _table_types(artifact: Path) -> dict[str, int]:
    """Element type of the word-embedding table (a 2-D initializer; not its scale or zero point)."""
    graph = inspection.load_graph(artifact / "model.onnx").graph
    tables = [t for t in graph.initializer if "word_embeddings" in t.name and len(t.dims) == 2]
    return {t.name: t.data_type for t in tables}


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--mode", "static", "--calib-size", "16"),
        ("--mode", "static", "--format", "qoperator", "--calib-size", "16"),
        ("--mode", "weight-only", "--bits", "4"),
        ("--mode", "weight-only", "--algorithm", "hqq"),
    ],
    ids=["dynamic", "static-qdq", "static-qoperator", "weight-only", "weight-only-hqq"],
)
def test_fused_embeddings_quantized_by_default(
    bert_fused: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # default: the fused table becomes int8 inside QEmbedLayerNormalization (one pass for dynamic,
    # a second quantize_dynamic pass over that op for static and weight-only)
    step = _quantize(bert_fused, tmp_path / "q", *args)
    ops = _ops(tmp_path / "q")
    assert ops.get("QEmbedLayerNormalization") == 1 and "EmbedLayerNormalization" not in ops, ops
    assert set(_table_types(tmp_path / "q").values()) <= {2, 3}  # uint8 / int8, no fp32 table left
    assert step["fidelity"]["sentence_embedding"]["cosine_mean"] > 0.9
    kept = _quantize(bert_fused, tmp_path / "kept", *args, "--no-embeddings")
    assert _ops(tmp_path / "kept").get("EmbedLayerNormalization") == 1
    assert 1 in _table_types(tmp_path / "kept").values()  # the fp32 table
    assert step["size_bytes"] < kept["size_bytes"]
    assert not list((tmp_path / "q").glob("without-embeddings*"))


def test_max_drop_can_rank_the_fused_embeddings(bert_fused: Path, tmp_path: Path) -> None:
    from edgeslim import data, quant_search, quantization

    _quantize(bert_fused, tmp_path / "q")
    batches = evaluation.feeds_for(bert_fused, data.load("sst2:dev").head(8))
    rows = quantization.node_sensitivity(
        bert_fused / "model.onnx",
        tmp_path / "q" / "model.onnx",
        batches,
        quant_search.SENSITIVE_OPS["dynamic"],
    )
    embedding = [r for r in rows if r["op"] == "EmbedLayerNormalization"]
    assert len(embedding) == 1 and 0 < embedding[0]["sqnr_db"] < 100  # a candidate to keep fp32


def test_exclude_op_keeps_fused_embeddings_fp32(bert_fused: Path, tmp_path: Path) -> None:
    _quantize(bert_fused, tmp_path / "q", "--exclude-op", "EmbedLayerNormalization")
    ops = _ops(tmp_path / "q")
    assert ops.get("EmbedLayerNormalization") == 1 and "QEmbedLayerNormalization" not in ops
    assert ops.get("QAttention") == 2  # the rest is quantized as usual


def test_unfused_embeddings_quantized_by_default(
    bert_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory (stray .data files)
    plain = tmp_path / "plain"
    assert (
        cli(
            [
                "optimize",
                str(bert_fp32),
                "-o",
                str(plain),
                "--no-fuse-attention",
                "--no-fuse-embeddings",
                "--require-full-fusion",
            ]
        ).exit_code
        == 0
    )
    _quantize(plain, tmp_path / "w4", "--mode", "weight-only")
    ops = _ops(tmp_path / "w4")
    assert ops["GatherBlockQuantized"] == 3 and ops["MatMulNBits"] == 12  # word/position/type tables
    _quantize(plain, tmp_path / "hqq", "--mode", "weight-only", "--algorithm", "hqq")
    assert _ops(tmp_path / "hqq")["GatherBlockQuantized"] == 3  # HQQ MatMuls, RTN tables
    _quantize(plain, tmp_path / "d8")
    assert not list(tmp_path.glob("*.data"))
    types = _table_types(tmp_path / "d8")
    assert types["model.embeddings.word_embeddings.weight_quantized"] in (2, 3)  # uint8 / int8
    assert "model.embeddings.word_embeddings.weight" not in types
    _quantize(plain, tmp_path / "d8-kept", "--no-embeddings")
    assert _table_types(tmp_path / "d8-kept")["model.embeddings.word_embeddings.weight"] == 1


def test_fp16(bert_fused: Path, tmp_path: Path) -> None:
    step = _quantize(bert_fused, tmp_path / "q", "--mode", "fp16")
    report = json.loads(cli(["inspect", str(tmp_path / "q"), "--json"]).output)
    assert report["initializer_bytes"].get("FLOAT16", 0) > report["initializer_bytes"].get("FLOAT", 0)
    assert {o["dtype"] for o in report["outputs"]} == {"FLOAT"}
    assert step["fidelity"]["sentence_embedding"]["sqnr_db"] > 40
    here = _sqnr_here(bert_fused, tmp_path / "q")
    assert here < 100 and step["fidelity"]["sentence_embedding"]["sqnr_db"] == pytest.approx(here, abs=5)
    assert any("fp16" in n for n in step["notes"])


def _fails(args: list[str], code: int, needle: str) -> None:
    result = cli(args)
    assert result.exit_code == code, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_bad_inputs(bert_fused: Path, tmp_path: Path) -> None:
    q = tmp_path / "q"
    _quantize(bert_fused, q)
    out = str(tmp_path / "o")
    _fails(["quantize", str(q), "-o", out], 3, "already quantized")
    _fails(["quantize", str(bert_fused), "-o", out, "--mode", "static", "--method", "magic"], 3, "method")
    _fails(["quantize", str(bert_fused), "-o", out, "--mode", "static", "--format", "qx"], 3, "format")
    _fails(["quantize", str(bert_fused), "-o", out, "--mode", "weight-only", "--bits", "3"], 3, "bits")
    _fails(
        ["quantize", str(bert_fused), "-o", out, "--mode", "static", "--calib", str(tmp_path / "none.tsv")],
        3,
        "not found",
    )
    (tmp_path / "cal.tsv").write_text("sentence\tlabel\nw1 w2\t0\n")
    _fails(
        [
            "quantize",
            str(bert_fused),
            "-o",
            out,
            "--mode",
            "static",
            "--calib",
            str(tmp_path / "cal.tsv"),
            "--text-column",
            "text",
        ],
        3,
        "no text column 'text'",
    )
    (tmp_path / "empty.tsv").write_text("sentence\tlabel\n")
    _fails(
        [
            "quantize",
            str(bert_fused),
            "-o",
            out,
            "--mode",
            "static",
            "--calib",
            str(tmp_path / "empty.tsv"),
            "--text-column",
            "sentence",
        ],
        3,
        "no examples",
    )
    _fails(["quantize", str(bert_fused), "-o", out, "--max-drop", "0.01"], 3, "--eval")
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_fewer_calibration_samples_warns(bert_fused: Path, tmp_path: Path) -> None:
    (tmp_path / "cal.jsonl").write_text('{"text": "w1 w2 w3"}\n{"text": "w4 w5"}\n')
    result = cli(
        [
            "quantize",
            str(bert_fused),
            "-o",
            str(tmp_path / "q"),
            "--mode",
            "static",
            "--calib",
            str(tmp_path / "cal.jsonl"),
            "--calib-size",
            "50",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "fewer than --calib-size" in result.output


def _sensitive_classifier(tiny_factory: Callable[..., Path], tmp_path: Path, texts: list[str]) -> Path:
    """A classifier whose layer-1 FFN input has one huge, unused GELU neuron: per-tensor int8
    activations then crush every other neuron of that MatMul's input."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    source = tiny_factory("bert", "seq", 2)
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():
        for block in model.bert.encoder.layer:  # peaky attention: the [CLS] state varies with the text
            attention = block.attention
            attention.self.query.weight.mul_(30.0)
            attention.self.key.weight.mul_(30.0)
            attention.self.value.weight.mul_(10.0)
            attention.output.dense.weight.mul_(10.0)
        layer.intermediate.dense.bias[0] = 400.0
        layer.output.dense.weight[:, 0] = 0.0  # fp32 ignores the outlier neuron
        layer.output.dense.weight.mul_(40.0)  # and relies on the FFN heavily
        batch = BertTokenizerFast.from_pretrained(source)(texts, padding=True, return_tensors="pt")
        logits = model(**batch).logits
        margin = logits[:, 1] - logits[:, 0]
        model.classifier.bias[1] -= margin.median()  # half the texts in each class
    directory = tmp_path / "sensitive"
    model.save_pretrained(directory)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (directory / name).write_bytes((tiny_factory("bert", "seq", 2) / name).read_bytes())
    return directory


def _sensitive_setup(tiny_factory: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    """The sensitive classifier, fused, and an eval TSV labelled with its fp32 predictions."""
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(90)}" for _ in range(rng.randint(3, 15))) for _ in range(120)]
    model = _sensitive_classifier(tiny_factory, tmp_path, texts)
    fp32, fused = tmp_path / "fp32", tmp_path / "fused"
    assert cli(["export", str(model), "--task", "sequence-classification", "-o", str(fp32)]).exit_code == 0
    assert cli(["optimize", str(fp32), "-o", str(fused)]).exit_code == 0
    from edgeslim.data import Examples

    examples = Examples("x", texts)
    batches = evaluation.feeds_for(fused, examples)
    outputs = evaluation.outputs(fused / "model.onnx", batches)
    preds = np.concatenate([o["logits"].argmax(-1) for o in outputs])
    assert 0 < preds.mean() < 1  # both classes present
    data = tmp_path / "eval.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{p}\n" for t, p in zip(texts, preds, strict=True)))
    return fused, data


def test_max_drop_excludes_the_sensitive_node(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    fused, data = _sensitive_setup(tiny_factory, tmp_path)
    # --no-embeddings: this constructed model sits a few rows from its decision boundary; int8
    # embeddings (on by default) flip one more held-out row, and the point here is the one layer
    keep = "--no-embeddings"
    plain = _quantize(fused, tmp_path / "q0", "--max-drop", "1.0", "--eval", str(data), keep)
    assert plain["search"]["drop"] > 0.05  # the constructed layer really breaks int8
    step = _quantize(fused, tmp_path / "q", "--max-drop", "0.02", "--eval", str(data), keep)
    search = step["search"]
    assert search["met"] and search["drop"] <= 0.02 and search["baseline"] == 1.0
    assert any("layer.1/output/dense" in n for n in search["excluded"])
    assert search["sensitivity"][0]["node"] == search["excluded"][0]


def test_max_drop_unmet_still_writes(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    fused, data = _sensitive_setup(tiny_factory, tmp_path)
    result = cli(
        [
            "quantize",
            str(fused),
            "-o",
            str(tmp_path / "q"),
            "--max-drop",
            "0.02",
            "--eval",
            str(data),
            "--max-fp32-nodes",
            "0",
        ]
    )
    assert result.exit_code == 6 and "best artifact" in result.output, result.output
    search = artifacts.read_manifest(tmp_path / "q")["steps"][-1]["search"]
    assert not search["met"] and search["excluded"] == [] and (tmp_path / "q" / "model.onnx").exists()


def test_max_drop_needs_labels(cls_artifact: Path, tmp_path: Path) -> None:
    fp32 = cls_artifact
    (tmp_path / "e.tsv").write_text("sentence\nw1 w2\n")
    _fails(
        [
            "quantize",
            str(fp32),
            "-o",
            str(tmp_path / "q"),
            "--max-drop",
            "0.1",
            "--eval",
            str(tmp_path / "e.tsv"),
            "--text-column",
            "sentence",
            "--label-column",
            "label",
        ],
        3,
        "label",
    )
    (tmp_path / "e2.tsv").write_text("sentence\tlabel\nw1 w2\tpositive\n")
    _fails(
        [
            "quantize",
            str(fp32),
            "-o",
            str(tmp_path / "q"),
            "--max-drop",
            "0.1",
            "--eval",
            str(tmp_path / "e2.tsv"),
        ],
        3,
        "not known to the model",
    )
