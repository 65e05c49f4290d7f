import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import cli


def test_eval_classification_json(cls_artifact: Path) -> None:
    result = cli(["eval", str(cls_artifact), "--data", "sst2:dev", "--limit", "100", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["n"] == 100 and set(report["metrics"]) == {"accuracy", "macro_f1", "mcc"}
    acc = report["metrics"]["accuracy"]
    assert acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]


def test_eval_reference_fidelity(cls_artifact: Path) -> None:
    result = cli(
        [
            "eval",
            str(cls_artifact),
            "--data",
            "sst2:dev",
            "--limit",
            "50",
            "--reference",
            str(cls_artifact),
            "--json",
        ]
    )
    report = json.loads(result.output[result.output.index("{") :])
    assert report["fidelity"]["logits"]["top1_agreement"] == 1.0


def test_eval_embeddings_on_pairs(bert_fused: Path, tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("a,b,score\n" + "".join(f"w{i} w{i + 1},w{i} w{i + 2},{i % 5}\n" for i in range(30)))
    result = cli(
        [
            "eval",
            str(bert_fused),
            "--data",
            str(path),
            "--text-column",
            "a",
            "--pair-column",
            "b",
            "--label-column",
            "score",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "spearman_cosine" in json.loads(result.output[result.output.index("{") :])["metrics"]


def test_eval_regression(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    art = tmp_path / "reg"
    result = cli(["export", str(tiny_factory("bert", "base")), "--task", "regression", "-o", str(art)])
    assert result.exit_code == 0, result.output
    result = cli(["eval", str(art), "--data", "stsb:dev", "--limit", "60", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output[result.output.index("{") :])["metrics"]) == {"pearson", "spearman"}


def test_eval_token_classification(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "tok", 5)
    config = json.loads((model / "config.json").read_text())
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config["id2label"] = dict(enumerate(labels))
    config["label2id"] = {v: k for k, v in enumerate(labels)}
    relabelled = tmp_path / "tok"
    relabelled.mkdir()
    for item in model.iterdir():
        (relabelled / item.name).write_bytes(item.read_bytes())
    (relabelled / "config.json").write_text(json.dumps(config))
    art = tmp_path / "a"
    assert cli(["export", str(relabelled), "--task", "token-classification", "-o", str(art)]).exit_code == 0
    data = tmp_path / "ner.tsv"
    data.write_text("tokens\tner_tags\n" + "w1 w2 w3\tB-PER I-PER O\n" * 10 + "w4 w5\tB-LOC O\n" * 10)
    result = cli(["eval", str(art), "--data", str(data), "--label-column", "ner_tags", "--json"])
    assert result.exit_code == 0, result.output
    f1 = json.loads(result.output[result.output.index("{") :])["metrics"]["entity_f1"]
    assert 0.0 <= f1["value"] <= 1.0
    data.write_text("tokens\tner_tags\nw1 w2\tB-ORG O\n")
    bad = cli(["eval", str(art), "--data", str(data), "--label-column", "ner_tags"])
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
