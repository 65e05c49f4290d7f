import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli
from pydantic import ValidationError

from edgeslim.augment import Augment, augment, transform
from edgeslim.errors import InputError

# 400 sentences of 10 distinct words each, from a 4,000-word corpus (so a replacement is
# almost never the word it replaces, and positions can be compared)
SENTENCES = [" ".join(f"w{10 * i + j}" for j in range(10)) for i in range(400)]
CORPUS = [w for s in SENTENCES for w in s.split()]
ONLY = {"word_dropout": 0.0, "replace": 0.0, "span_shuffle": 0.0}


def _copies(cfg: Augment, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [transform(s.split(), cfg, CORPUS, rng) for s in SENTENCES]


def test_transforms_are_seeded_and_never_empty() -> None:
    cfg = Augment(word_dropout=0.2, replace=0.2, span_shuffle=0.2)
    assert _copies(cfg, 1) == _copies(cfg, 1)
    assert _copies(cfg, 1) != _copies(cfg, 2)
    assert all(out and out != s.split() for out, s in zip(_copies(cfg), SENTENCES, strict=True))
    everything = _copies(Augment(**{**ONLY, "word_dropout": 1.0}))
    assert all(len(out) == 1 for out in everything)  # all would drop: one word is kept


def test_word_dropout_drops_about_its_rate() -> None:
    for p in (0.1, 0.5):
        kept = sum(len(out) for out in _copies(Augment(**{**ONLY, "word_dropout": p})))
        dropped = 1 - kept / len(CORPUS)
        expected = p + (1 - p) ** 10 / 10  # a sentence left whole loses one forced word
        assert abs(dropped - expected) < 0.02, (p, dropped)


def test_replace_swaps_about_its_rate_for_corpus_words() -> None:
    for p in (0.1, 0.3):
        outs = _copies(Augment(**{**ONLY, "replace": p}))
        pairs = [
            (a, b)
            for out, s in zip(outs, SENTENCES, strict=True)
            for a, b in zip(out, s.split(), strict=False)
        ]
        assert all(len(out) == 10 for out in outs)
        changed = sum(a != b for a, b in pairs) / len(pairs)
        expected = p + (1 - p) ** 10 / 10  # a sentence left whole gets one forced replacement
        assert abs(changed - expected) < 0.02, (p, changed)
        assert {a for a, _ in pairs} <= set(CORPUS)


def test_span_shuffle_permutes_short_spans_at_its_rate() -> None:
    moved = {}
    for p in (0.05, 0.5):  # a sentence left whole gets one forced span: the low rate moves more
        outs = _copies(Augment(**{**ONLY, "span_shuffle": p}))
        for out, s in zip(outs, SENTENCES, strict=True):
            words = s.split()
            assert sorted(out) == sorted(words) and out != words  # a permutation, never the same
            at = [i for i, (a, b) in enumerate(zip(out, words, strict=True)) if a != b]
            # each moved word sits within a span of 3 around its place (a word "w{10i+j}" knows j)
            assert all(abs(int(out[i][1:]) % 10 - i) < 3 for i in at)
        moved[p] = sum(
            a != b
            for out, s in zip(outs, SENTENCES, strict=True)
            for a, b in zip(out, s.split(), strict=False)
        )
    assert moved[0.5] > 2 * moved[0.05]


def test_augment_dedupes_and_is_identical_when_rebuilt() -> None:
    sentences = ["a fine film", "a fine film", "bad", "the plot , alas , never quite works", ""]
    cfg = Augment(copies=3, seed=7)
    made = augment(sentences, cfg)
    assert made == augment(list(sentences), Augment(copies=3, seed=7))  # a resumed run: same pool
    assert made != augment(sentences, Augment(copies=3, seed=8))
    texts = [text for _, text in made]
    assert len(texts) == len(set(texts)) and not set(texts) & set(sentences)
    assert all(text.strip() for text in texts)
    per_source = [sum(1 for i, _ in made if i == k) for k in range(len(sentences))]
    assert per_source[0] == per_source[3] == 3 and per_source[4] == 0  # an empty line has nothing to edit
    assert per_source[1] <= 3  # the repeated sentence: only copies new to the pool
    one_word = augment(["bad", "good"], Augment(**{**ONLY, "word_dropout": 0.5}, copies=2))
    assert one_word == []  # dropout alone cannot change one word (and never empties it)


def test_config_validation() -> None:
    from edgeslim.config import make_config
    from edgeslim.steps.distill import Config

    with pytest.raises(ValidationError):
        Augment(copies=2, dropout=0.1)  # type: ignore[call-arg]
    for bad in ({"word_dropout": 1.5}, {"replace": -0.1}, {"span_shuffle": 2.0}, {"copies": 0}, ONLY):
        with pytest.raises(ValidationError):
            Augment(**bad)
    with pytest.raises(InputError, match="unknown key 'copy'"):
        make_config(Config, augment={"copy": 2})
    with pytest.raises(InputError, match="all 0"):
        make_config(Config, augment=ONLY)
    cfg = make_config(Config, student_layers=1, augment={"copies": 2, "size": 10})
    assert cfg.augment == Augment(copies=2, size=10)


def test_distill_data_adds_augmented_rows_unlabeled(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    from edgeslim.train import distill
    from edgeslim.train.config import DistillConfig

    teacher = tiny_factory("bert", "seq", 2)
    train_file = tmp_path / "train.tsv"  # 30 labelled sentences from SENTENCES
    train_file.write_text(
        "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES[:30]))
    )
    base = {"student_layers": 1, "data": str(train_file), "eval": str(train_file), "train_size": 20}
    plain = distill.load_data(teacher, DistillConfig(**base), "sequence-classification")
    cfg = DistillConfig(**base, augment=Augment(copies=2, size=12), unlabeled="wikitext2", unlabeled_size=5)
    notes: dict[str, dict] = {}
    train, _, labels, _ = distill.load_data(teacher, cfg, "sequence-classification", notes)
    assert notes["augment"]["added"] == 24 == notes["augment"]["wanted"]
    assert len(train) == len(plain[0]) + 5 + 24 and train.texts[:20] == plain[0].texts
    assert labels[:20] == plain[2] and labels[20:] == [-1] * 29  # teacher terms only
    sources = set(train.texts[:12])
    assert {e["source"] for e in notes["augment"]["examples"]} <= sources
    assert not set(train.texts[25:]) & set(train.texts[:20])  # new sentences, not the training ones
    again = distill.load_data(teacher, cfg, "sequence-classification")  # resume: the same pool
    assert again[0].texts == train.texts and again[2] == labels
    other = tmp_path / "in_domain.txt"
    other.write_text("w1 w2 w3 w4\nw5 w6 w7\n")  # one sentence a line
    own = DistillConfig(**base, augment=Augment(copies=3, source=str(other)))
    own_train = distill.load_data(teacher, own, "sequence-classification")[0]
    assert len(own_train) == 20 + 6  # its own sentences, its own vocabulary
    assert all(set(text.split()) <= {f"w{i}" for i in range(1, 8)} for text in own_train.texts[20:])
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\tb\tlabel\nw1 w2\tw3 w4\t0\nw5 w6\tw7\t1\n")
    paired = DistillConfig(
        student_layers=1,
        data=str(pairs),
        eval=str(pairs),
        text_column="a",
        pair_column="b",
        augment=Augment(),
    )
    with pytest.raises(InputError, match="single-sentence"):
        distill.load_data(teacher, paired, "sequence-classification")


def test_distill_with_augment_records_the_pool(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    fast = ["--train-size", "16", "--eval-size", "16", "--batch-size", "16"]
    fast += ["--eval-every", "2", "--save-every", "2", "--max-steps", "4"]
    args = ["distill", "--teacher", str(teacher), "--student-layers", "1", "--nll", "1", *fast]
    out = tmp_path / "s"
    result = cli([*args, "--augment-copies", "2", "--augment-size", "12", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["unlabeled_rows"] == 24 == record["augment"]["added"]  # 2 copies x 12 sentences
    assert record["config"]["augment"]["copies"] == 2 and len(record["augment"]["examples"]) == 5
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(logged) == 2 and all(row["kl"] >= 0 and row["nll"] > 0 for row in logged)
    bad = cli([*args, "--augment-size", "12", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 3 and "--augment-copies" in bad.output and not (tmp_path / "bad").exists()
