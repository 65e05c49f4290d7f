import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli, ort_outputs, similar_pairs


def _eval(artifact: Path, data: Path | str, *args: str) -> dict:
    result = cli(["eval", str(artifact), "--data", str(data), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def test_eval_classification_json(balanced_cls: dict[str, Path]) -> None:
    """Labelled with the model's own predictions every metric is perfect; with the other class,
    accuracy is 0 and MCC -1."""
    report = _eval(balanced_cls["artifact"], balanced_cls["own"])
    assert report["n"] == 60 and set(report["metrics"]) == {"accuracy", "macro_f1", "mcc"}
    assert {k: v["value"] for k, v in report["metrics"].items()} == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "mcc": 1.0,
    }
    flipped = _eval(balanced_cls["artifact"], balanced_cls["flipped"])["metrics"]
    assert flipped["accuracy"]["value"] == 0.0 and flipped["mcc"]["value"] == -1.0
    acc = _eval(balanced_cls["artifact"], "sst2:dev", "--limit", "100")["metrics"]["accuracy"]
    (low, high), p = acc["ci95"], acc["value"]
    assert 0.1 < p < 0.9 and low < p < high  # bootstrap 95% CI: about the normal approximation's width
    assert high - low == pytest.approx(2 * 1.96 * (p * (1 - p) / 100) ** 0.5, rel=0.3)


def test_eval_reference_fidelity(balanced_cls: dict[str, Path]) -> None:
    art, negated, data = balanced_cls["artifact"], balanced_cls["negated"], balanced_cls["own"]
    same = _eval(art, data, "--reference", str(art))["fidelity"]["logits"]
    assert same["top1_agreement"] == 1.0 and same["kl"] == pytest.approx(0.0, abs=1e-9)
    other = _eval(art, data, "--reference", str(negated))["fidelity"]["logits"]
    assert other["top1_agreement"] == 0.0 and other["kl"] > 1e-5  # every prediction flipped
    assert other["sqnr_db"] < 0 < same["sqnr_db"]  # negated logits: noise twice the signal


def test_eval_embeddings_on_pairs(bert_fused: Path, tmp_path: Path) -> None:
    columns = ["--text-column", "a", "--pair-column", "b", "--label-column", "score"]
    up_file, down_file = similar_pairs(tmp_path / "up.csv"), similar_pairs(tmp_path / "down.csv", sign=-1)
    up = _eval(bert_fused, up_file, *columns)["metrics"]["spearman_cosine"]
    down = _eval(bert_fused, down_file, *columns)["metrics"]["spearman_cosine"]
    assert up["value"] > 0.5  # more shared words, closer embeddings
    assert down["value"] == pytest.approx(-up["value"], abs=1e-4)  # reversed scores, reversed ranks


def test_eval_regression(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    art = tmp_path / "reg"
    result = cli(["export", str(tiny_factory("bert", "base")), "--task", "regression", "-o", str(art)])
    assert result.exit_code == 0, result.output
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(90)}" for _ in range(rng.randint(2, 12))) for _ in range(40)]
    scores = ort_outputs(art, texts)["logits"][:, 0]
    for name, sign in (("same", 1.0), ("reversed", -1.0)):  # scored by the model itself, or negated
        rows = "".join(f"{t}\t{sign * 1000 * s:.6f}\n" for t, s in zip(texts, scores, strict=True))
        (tmp_path / f"{name}.tsv").write_text("sentence\tlabel\n" + rows)
        metrics = _eval(art, tmp_path / f"{name}.tsv")["metrics"]
        assert set(metrics) == {"pearson", "spearman"}
        assert metrics["pearson"]["value"] == pytest.approx(sign, abs=1e-3)
        assert metrics["spearman"]["value"] == pytest.approx(sign, abs=1e-3)


def test_eval_token_classification(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    """A tagger biased to say B-PER for every word: entity F1 follows seqeval's entity counts."""
    import torch
    from transformers import AutoModelForTokenClassification

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = AutoModelForTokenClassification.from_pretrained(tiny_factory("bert", "tok", 5))
    model.config.id2label, model.config.label2id = (
        dict(enumerate(labels)),
        {v: k for k, v in enumerate(labels)},
    )
    with torch.no_grad():
        model.classifier.bias[1] += 10.0  # B-PER wins on every token
    tagger = tmp_path / "tok"
    model.save_pretrained(tagger)
    for item in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tagger / item).write_bytes((tiny_factory("bert", "tok", 5) / item).read_bytes())
    art = tmp_path / "a"
    assert cli(["export", str(tagger), "--task", "token-classification", "-o", str(art)]).exit_code == 0
    data = tmp_path / "ner.tsv"
    args = ["--label-column", "ner_tags"]
    data.write_text("tokens\tner_tags\n" + "w1 w2 w3\tB-PER B-PER B-PER\n" * 10)
    assert _eval(art, data, *args)["metrics"]["entity_f1"]["value"] == 1.0  # gold = predictions
    # + 10 rows with one two-word PER (gold) vs two one-word PERs (predicted): tp 30, pred 50, gold 40
    data.write_text(data.read_text() + "w4 w5\tB-PER I-PER\n" * 10)
    f1 = _eval(art, data, *args)["metrics"]["entity_f1"]
    assert f1["value"] == pytest.approx(2 * 30 / (50 + 40), abs=1e-4)
    data.write_text("tokens\tner_tags\n" + "w1 w2 w3\tB-LOC I-LOC O\n" * 10)
    assert _eval(art, data, *args)["metrics"]["entity_f1"]["value"] == 0.0  # no entity found
    data.write_text("tokens\tner_tags\nw1 w2\tB-ORG O\n")
    bad = cli(["eval", str(art), "--data", str(data), *args])
    assert bad.exit_code == 3 and "B-ORG" in bad.output


def test_eval_bad_input(cls_artifact: Path, tmp_path: Path) -> None:
    (tmp_path / "nolabel.tsv").write_text("sentence\nw1 w2\n")
    result = cli(["eval", str(cls_artifact), "--data", str(tmp_path / "nolabel.tsv")])
    assert result.exit_code == 3 and "label" in result.output
    (tmp_path / "unknown.tsv").write_text("sentence\tlabel\nw1\tmaybe\n")
    result = cli(["eval", str(cls_artifact), "--data", str(tmp_path / "unknown.tsv")])
    assert result.exit_code == 3 and "not known to the model" in result.output
    (tmp_path / "empty.tsv").write_text("sentence\tlabel\n")
    result = cli(["eval", str(cls_artifact), "--data", str(tmp_path / "empty.tsv")])
    assert result.exit_code == 3 and "no examples" in result.output
    (tmp_path / "model.onnx").write_text("x")
    assert cli(["eval", str(tmp_path), "--data", "sst2:dev"]).exit_code == 3  # no manifest


BLOCK_HEAVY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'optimum', 'sklearn', 'scipy'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from edgeslim.cli import main
sys.argv = ['edgeslim'] + sys.argv[1:]
main()
"""


def test_eval_and_bench_run_without_torch(cls_artifact: Path) -> None:
    """The runtime install: no torch, transformers, optimum, scipy or scikit-learn imported."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_HEAVY,
            "eval",
            str(cls_artifact),
            "--data",
            "sst2:dev",
            "--limit",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 20
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_HEAVY,
            "bench",
            str(cls_artifact),
            "--threads",
            "1",
            "--batch",
            "1",
            "--seq",
            "8",
            "--runs",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout[done.stdout.index("{") :])["cells"]


def test_optimize_and_quantize_run_without_torch(bert_fp32: Path, tmp_path: Path) -> None:
    """Import only what a command uses: fusing and quantizing need onnx and onnxruntime only."""
    fused, quantized = tmp_path / "fused", tmp_path / "int8"
    for args in (
        ["optimize", str(bert_fp32), "-o", str(fused)],
        ["quantize", str(fused), "-o", str(quantized)],
    ):
        done = subprocess.run([sys.executable, "-c", BLOCK_HEAVY, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert (quantized / "model.onnx").is_file()
