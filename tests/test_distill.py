import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import cli, similar_pairs

from edgeslim.errors import InputError
from edgeslim.train import losses, students

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
    import torch.nn.functional as F

    torch.manual_seed(0)
    logits, other, t = torch.randn(8, 3), torch.randn(8, 3), 3.0
    assert float(losses.soft_kl(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(logits / t, -1)  # the teacher's softened distribution
    kl = (p * (p.log() - torch.log_softmax(other / t, -1))).sum(-1).mean() * t * t
    assert float(losses.soft_kl(other, logits, t)) == pytest.approx(float(kl), rel=1e-5)
    entropy = -(p * p.log()).sum(-1).mean() * t * t  # soft CE = KL + the teacher's entropy
    assert float(losses.soft_cross_entropy(other, logits, t)) == pytest.approx(float(kl + entropy), rel=1e-5)
    confident = torch.tensor([[10.0, 0.0], [0.1, 0.0]])
    student = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    nll, kept = losses.hard_nll(student, confident, min_confidence=0.9)
    assert kept == 0.5  # only row 0 (teacher label 0) is kept; row 1 would be cheap (label 0 too)
    assert float(nll) == pytest.approx(float(-torch.log_softmax(student[0], -1)[0]), rel=1e-5)
    assert float(losses.hard_nll(student, confident, 0.0)[0]) < float(nll)  # row 1 counts again
    nothing, none_kept = losses.hard_nll(student, confident, min_confidence=1.0)
    assert float(nothing) == 0.0 and none_kept == 0.0
    hidden, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert float(losses.hidden_mse(hidden, hidden, mask)) == 0.0
    noisy = hidden.clone()
    noisy[0, 4] += 100.0  # a padded position: ignored
    assert float(losses.hidden_mse(noisy, hidden, mask)) == 0.0
    noisy[1, 4] += 2.0  # a real position: 4 features off by 2 over 8 real tokens x 4 features
    assert float(losses.hidden_mse(noisy, hidden, mask)) == pytest.approx(4 * 4.0 / 32, rel=1e-5)
    attn = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    assert float(losses.attention_kl(attn, attn, mask)) == pytest.approx(0.0, abs=1e-6)
    other_attn = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    rows = (attn * (attn.log() - other_attn.log())).sum(-1)  # (B, heads, T)
    expected = (rows * mask[:, None]).sum() / (mask.sum() * 4)
    assert float(losses.attention_kl(other_attn, attn, mask)) == pytest.approx(float(expected), rel=1e-4)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    assert float(losses.cosine_loss(a, 3 * a)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.cosine_loss(a, -a)) == pytest.approx(2.0, abs=1e-6)
    assert float(losses.cosine_loss(a, b)) == pytest.approx(float((1 - F.cosine_similarity(a, b)).mean()))


TEXTS = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9 w10", "w11", "w12 w13 w14", "w15 w16", "w17 w18 w19 w20", "w21"]


def _setup(model: Path, task: str) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """Teacher (sharpened when it classifies), a one-layer student copied from its layer 1, a batch."""
    from transformers import AutoTokenizer

    from edgeslim import models

    teacher = models.load(model, task)
    torch.manual_seed(0)
    student = students.reduce_layers(teacher, [1])  # student layer 0 imitates teacher layer 1
    batch = dict(AutoTokenizer.from_pretrained(model)(TEXTS, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([0, 1, -1, 1, 0, -1, 1, 0])  # -1: an unlabeled row
    with torch.no_grad():
        attention = teacher.base_model.encoder.layer[1].attention.self
        attention.query.weight.mul_(30.0)  # peaky teacher attention, unlike the student's copy
        attention.key.weight.mul_(30.0)
        if task == "sequence-classification":  # sure and unsure pseudo-labels of both classes
            teacher.classifier.weight.mul_(3000.0)
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            teacher.classifier.bias[1] -= (teacher(**inputs).logits @ torch.tensor([-1.0, 1.0])).median()
            student.classifier.weight.mul_(10.0)  # per-row student losses that differ
    return teacher, student, batch


def _reference(term: str, s: Any, t: Any, batch: dict[str, torch.Tensor], cut: float) -> torch.Tensor:
    """Each term computed here from its definition (not through edgeslim.train.losses)."""
    mask, labels, temp = batch["attention_mask"], batch["labels"], 2.0
    if term in ("kl", "soft_ce"):
        p, log_q = torch.softmax(t.logits / temp, -1), torch.log_softmax(s.logits / temp, -1)
        inner = p * (p.log() - log_q) if term == "kl" else -p * log_q
        return inner.sum(-1).mean() * temp * temp
    if term in ("nll", "alpha"):
        confidence, pseudo = torch.softmax(t.logits, -1).max(-1)
        rows = confidence >= cut if term == "nll" else labels >= 0
        target = pseudo if term == "nll" else labels
        return -torch.log_softmax(s.logits[rows], -1).gather(1, target[rows, None]).mean()
    if term == "hidden":
        m = mask[..., None].float()
        return (((s.hidden_states[1] - t.hidden_states[2]) ** 2) * m).sum() / (m.sum() * 32)
    if term == "attention":
        a_t, a_s = t.attentions[1], s.attentions[0]  # (B, heads, T, T)
        rows = (a_t * ((a_t + 1e-8).log() - (a_s + 1e-8).log())).sum(-1)
        return (rows * mask[:, None]).sum() / (mask.sum() * a_t.shape[1])
    pooled = [
        (o.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) for o in (s, t)
    ]  # mean pooling, (B, H)
    if term == "cosine":
        return (1 - torch.nn.functional.cosine_similarity(*pooled, dim=-1)).mean()
    return ((pooled[0] - pooled[1]) ** 2).mean()


def _median_confidence(teacher: Any, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return float(torch.softmax(logits, -1).max(-1).values.median())


# Weights field -> the key make_loss records it under (None: per-layer terms, not in the summary)
TERMS = {"kl": "kl", "soft_ce": "soft_ce", "nll": "nll", "alpha": "task", "hidden": None, "attention": None}
EMBEDDING_TERMS = {"cosine": "cosine", "mse": "mse"}
# Adam step sizes: random gold labels need a larger one (the student's head must grow first);
# the small MSE terms overshoot above 1e-3
LR = {"alpha": 1e-2, "soft_ce": 3e-3, "nll": 3e-3, "attention": 3e-3}


@pytest.mark.parametrize("term", [*TERMS, *EMBEDDING_TERMS])
def test_each_distillation_term_alone_moves_the_loss_it_names(
    term: str, tiny_factory: Callable[..., Path]
) -> None:
    from edgeslim.train.config import Weights

    embedding = term in EMBEDDING_TERMS
    task = "feature-extraction" if embedding else "sequence-classification"
    teacher, student, batch = _setup(
        tiny_factory("bert") if embedding else tiny_factory("bert", "seq", 2), task
    )
    wrapper = students.Student(student, 32, 1)
    needs = {"output_hidden_states": True, "output_attentions": True}

    def reference() -> torch.Tensor:
        """The term now, less its floor (soft CE cannot fall below the teacher's entropy)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t = teacher(**inputs, **needs)
        floor = _reference(term, t, t, batch, cut) if term == "soft_ce" else 0.0
        return _reference(term, wrapper.student(**inputs, **needs), t, batch, cut) - floor

    cut = 0.0 if embedding else _median_confidence(teacher, batch)  # keeps about half the rows
    off = {"kl": 0.0, "cosine": 0.0, "min_confidence": cut}
    loss_fn = losses.make_loss(teacher, Weights(**{**off, term: 0.5}), [1], task)
    total, parts = loss_fn(wrapper, dict(batch))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s, t = wrapper.student(**inputs, **needs), teacher(**inputs, **needs)
    expected = 0.5 * float(_reference(term, s, t, batch, cut))
    assert expected > 1e-4 and float(total.detach()) == pytest.approx(expected, rel=1e-3)
    if term == "nll":  # the confidence filter matters here: all rows would give another value
        assert abs(float(_reference(term, s, t, batch, 0.0)) - expected / 0.5) > 0.005
    key = {**TERMS, **EMBEDDING_TERMS}[term]
    assert parts == ({key: pytest.approx(expected, abs=1e-4)} if key else {})
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wrapper.parameters())
    silent, silent_parts = losses.make_loss(teacher, Weights(**off), [1], task)(wrapper, dict(batch))
    assert silent_parts == {} and not silent.requires_grad  # weight 0: no term, no gradient
    before = float(reference().detach())
    optimizer = torch.optim.Adam(wrapper.parameters(), lr=LR.get(term, 1e-3))
    for _ in range(10):  # the term alone drives the student towards the teacher on what it names
        optimizer.zero_grad()
        loss_fn(wrapper, dict(batch))[0].backward()
        optimizer.step()
    assert float(reference().detach()) < 0.9 * before


def test_pseudo_label_filter_and_gold_rows(tiny_factory: Callable[..., Path]) -> None:
    from edgeslim.train.config import Weights

    teacher, student, batch = _setup(tiny_factory("bert", "seq", 2), "sequence-classification")
    wrapper = students.Student(student, 32, 1)
    nll = {"kl": 0.0, "nll": 1.0}
    everything = losses.make_loss(teacher, Weights(**nll), [1], "sequence-classification")
    strict = losses.make_loss(teacher, Weights(**nll, min_confidence=1.0), [1], "sequence-classification")
    assert everything(wrapper, dict(batch))[1]["nll"] > 0
    total, parts = strict(wrapper, dict(batch))  # no pseudo-label is that sure: nothing kept
    assert parts == {"nll": 0.0} and float(total.detach()) == 0.0
    total.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in wrapper.parameters())
    gold = losses.make_loss(teacher, Weights(kl=0.0, alpha=1.0), [1], "sequence-classification")
    unlabeled = {**batch, "labels": torch.full_like(batch["labels"], -1)}
    assert gold(wrapper, unlabeled)[1] == {}  # alpha acts on gold labels only


def test_pseudo_label_stats_count_kept_rows_and_their_accuracy() -> None:
    from types import SimpleNamespace

    from edgeslim.train import distill

    def teacher(**batch: torch.Tensor) -> SimpleNamespace:  # the logits are the input
        return SimpleNamespace(logits=batch["x"])

    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.1, 0.0], [0.0, 0.1]])  # confidences .98 .98 .52 .52
    batches = [{"x": logits, "labels": torch.tensor([0, 0, 0, 1])}]
    sure = distill.pseudo_label_stats(teacher, batches, 0.9)
    assert sure == {"kept_fraction": 0.5, "pseudo_label_accuracy": 0.5}
    assert distill.pseudo_label_stats(teacher, batches, 0.0) == {
        "kept_fraction": 1.0,
        "pseudo_label_accuracy": 0.75,
    }


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
    assert record["layer_map"] == [1]
    assert record["pseudo_labels"]["kept_fraction"] == 1.0  # two classes: every max prob >= 0.5
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    for row in logged:  # every switched-on term is in the loss (kl is ~0: near-uniform logits)
        assert {"kl", "soft_ce", "nll", "task"} <= set(row)
        assert row["soft_ce"] > 0 and row["nll"] > 0 and row["task"] > 0
        named = sum(row[k] for k in ("kl", "soft_ce", "nll", "task"))
        assert row["loss"] > named + 0.01  # the per-layer hidden and attention terms add the rest
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
            "--eval",
            str(tmp_path / "d.tsv"),
            "-o",
            out,
            *FAST,
        ]
    )
    assert result.exit_code == 3 and "not known to the model" in result.output
    assert not Path(out).exists()


def _dev_spearman(model: Path, pairs: Path) -> float:
    """Spearman of the scores in `pairs` vs cosines of mean-pooled embeddings, computed here."""
    from scipy import stats
    from transformers import AutoModel, AutoTokenizer

    rows = [line.split("\t") for line in pairs.read_text().splitlines()[1:]]
    encoder, tokenizer = AutoModel.from_pretrained(model).eval(), AutoTokenizer.from_pretrained(model)
    sides = []
    for texts in ([r[0] for r in rows], [r[1] for r in rows]):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"][..., None]
        sides.append((hidden * mask).sum(1) / mask.sum(1))
    cosine = torch.nn.functional.cosine_similarity(*sides, dim=-1).numpy()
    return float(stats.spearmanr([float(r[2]) for r in rows], cosine)[0])


def test_embedding_distill_records_each_models_dev_spearman(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    from edgeslim.steps import run_single
    from edgeslim.steps.distill import Config, Weights

    teacher = tiny_factory("bert")  # a bare encoder: an embedding model, mean pooling
    train, dev = similar_pairs(tmp_path / "train.tsv", 0), similar_pairs(tmp_path / "dev.tsv", 1)
    columns = {"text_column": "a", "pair_column": "b", "label_column": "score"}
    loop = {"max_steps": 4, "eval_every": 4, "save_every": 4, "batch_size": 16}
    cfg = Config(
        student_layers=1, data=str(train), eval=str(dev), losses=Weights(hidden=1.0), **columns, **loop
    )
    run_single(str(teacher), cfg, tmp_path / "s", force=False)
    record = json.loads((tmp_path / "s" / "edgeslim-train.json").read_text())
    teacher_rho = _dev_spearman(teacher, dev)
    assert teacher_rho > 0.3, teacher_rho  # more shared words, closer embeddings: the figure means something
    assert record["teacher_dev"]["spearman"] == pytest.approx(teacher_rho, abs=1e-3)
    student_rho = _dev_spearman(tmp_path / "s", dev)  # the saved (best = only evaluated) student
    assert record["best"]["spearman"] == pytest.approx(student_rho, abs=1e-3)


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
    assert set(record["teacher_dev"]) == set(record["best"]) - {"step"} == {"spearman"}
    assert "pseudo_labels" not in record
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["num_hidden_layers"] == 1
    assert (out / "1_Pooling" / "config.json").exists()  # pooling travels with the student
    exported = cli(["export", str(out), "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output
    bad = cli([*args, "--eval", "sst2:dev", *FAST, "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 3 and "stsb:dev" in bad.output and not (tmp_path / "bad").exists()
