import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import cli

from edgeslim import losses, students
from edgeslim.errors import InputError

FAST = [
    "--train-size",
    "64",
    "--eval-size",
    "32",
    "--batch-size",
    "16",
    "--eval-every",
    "4",
    "--save-every",
    "4",
    "--max-steps",
    "4",
]


def test_layer_maps() -> None:
    assert students.layer_map(6, 3, "every-other") == [1, 3, 5]
    assert students.layer_map(6, 3, "first-k") == [0, 1, 2]
    assert students.layer_map(6, 2, "last-k") == [4, 5]
    assert students.layer_map(6, None, "0,2,4") == [0, 2, 4]
    for bad in ("0,6", "2,1", "x"):
        with pytest.raises(InputError):
            students.layer_map(6, None, bad)
    with pytest.raises(InputError):
        students.layer_map(6, 7, "first-k")


def test_reduce_layers_copies_the_mapped_layers(tiny_factory: Callable[..., Path]) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_factory("bert", "seq", 2))
    student = students.reduce_layers(teacher, [1])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    a = student.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(a, teacher.bert.encoder.layer[1].attention.self.query.weight)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    assert len(teacher.bert.encoder.layer) == 2  # the teacher is untouched


def test_losses() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 3)
    assert float(losses.soft_kl(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 3)
    t = 3.0
    manual = (
        torch.nn.functional.kl_div(
            torch.log_softmax(other / t, -1), torch.softmax(logits / t, -1), reduction="batchmean"
        )
        * t
        * t
    )
    assert float(losses.soft_kl(other, logits, t)) == pytest.approx(float(manual), rel=1e-5)
    confident = torch.tensor([[10.0, 0.0], [0.1, 0.0]])
    _, kept = losses.hard_nll(torch.zeros(2, 2), confident, min_confidence=0.9)
    assert kept == 0.5
    hidden, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert float(losses.hidden_mse(hidden, hidden, mask)) == 0.0
    noisy = hidden.clone()
    noisy[0, 4] += 100.0  # a padded position: ignored
    assert float(losses.hidden_mse(noisy, hidden, mask)) == 0.0
    attn = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    assert float(losses.attention_kl(attn, attn, mask)) == pytest.approx(0.0, abs=1e-6)


def test_distill_all_losses_then_export(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    out = tmp_path / "student"
    result = cli(
        [
            "distill",
            "--teacher",
            str(teacher),
            "-o",
            str(out),
            "--student-layers",
            "1",
            "--unlabeled",
            "wikitext2",
            "--unlabeled-size",
            "32",
            "--nll",
            "1",
            "--min-confidence",
            "0.5",
            "--hidden",
            "1",
            "--attention",
            "1",
            "--alpha",
            "0.5",
            "--soft-ce",
            "0.5",
            *FAST,
        ]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["layer_map"] == [1] and 0 <= record["pseudo_labels"]["kept_fraction"] <= 1
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    exported = cli(["export", str(out), "--task", "sequence-classification", "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output


def _narrow_student(teacher: Path, directory: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=95,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(teacher / name, directory / name)
    return directory


def test_distill_into_a_narrower_student(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    student = _narrow_student(teacher, tmp_path / "narrow")
    result = cli(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--student",
            str(student),
            "-o",
            str(tmp_path / "o"),
            "--hidden",
            "1",
            *FAST,
        ]
    )
    assert result.exit_code == 0, result.output


def test_distill_bad_input(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    other = _narrow_student(teacher, tmp_path / "other")
    (other / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (other / "tokenizer.json").unlink()
    out = str(tmp_path / "o")
    result = cli(["distill", "--teacher", str(teacher), "--student", str(other), "-o", out, *FAST])
    assert result.exit_code == 3 and "tokenizers differ" in result.output
    result = cli(["distill", "--teacher", str(teacher), "--init", "0,5", "-o", out, *FAST])
    assert result.exit_code == 3 and "outside the teacher" in result.output
    result = cli(
        ["distill", "--teacher", str(tiny_factory("bert")), "--student-layers", "1", "-o", out, *FAST]
    )  # an embedding teacher with a classification dev set
    assert result.exit_code == 3 and "stsb:dev" in result.output
    token_teacher = str(tiny_factory("bert", "tok", 5))
    result = cli(["distill", "--teacher", token_teacher, "--student-layers", "1", "-o", out, *FAST])
    assert result.exit_code == 3 and "head" in result.output
    (tmp_path / "d.tsv").write_text("sentence\tlabel\nw1\tpositive\n")
    result = cli(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--student-layers",
            "1",
            "--data",
            str(tmp_path / "d.tsv"),
            "-o",
            out,
            *FAST,
        ]
    )
    assert result.exit_code == 3 and "not known to the model" in result.output
    assert not Path(out).exists()


def test_embedding_teacher_distills_with_cosine_and_scores_spearman(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    teacher = tiny_factory("bert")  # a bare encoder: an embedding model
    (teacher / "1_Pooling").mkdir(exist_ok=True)
    (teacher / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher), "--student-layers", "1", "--data", "stsb:train"]
    result = cli([*args, "--eval", "stsb:dev", *FAST, "--hidden", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert -1 <= record["best"]["spearman"] <= 1 and -1 <= record["teacher_dev"]["spearman"] <= 1
    assert "pseudo_labels" not in record
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["num_hidden_layers"] == 1
    assert (out / "1_Pooling" / "config.json").exists()  # pooling travels with the student
    exported = cli(["export", str(out), "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output
    bad = cli([*args, "--eval", "sst2:dev", *FAST, "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 3 and "stsb:dev" in bad.output and not (tmp_path / "bad").exists()
