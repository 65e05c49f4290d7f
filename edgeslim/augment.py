"""Augmented in-domain text for distillation: seeded word dropout, word replacement and span
shuffles of source sentences (pure Python, whitespace words). The copies are unlabeled: the
teacher scores them like any --unlabeled text (KL, pseudo-labels, hidden states)."""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPAN = 3  # words a span shuffle permutes (fewer at the sentence's end)
TRIES = 8  # draws per wanted copy before a sentence gives up (short sentences run out of new copies)
EXAMPLES = 5  # (source, augmented) pairs kept in the training record


class Augment(BaseModel):
    """Seeded edits of source sentences, added to the unlabeled pool the teacher terms see."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    copies: int = Field(2, ge=1, description="Augmented sentences per source sentence.")
    source: str | None = Field(
        None,
        description="Text to augment (built-in name or file; keep the dev set out); default the "
        "distill training rows (--data after --train-size and any held-out dev part).",
    )
    size: int | None = Field(None, gt=0, description="Augment the first N source examples.")
    word_dropout: float = Field(0.1, ge=0, le=1, description="Probability of dropping each word.")
    replace: float = Field(
        0.1, ge=0, le=1, description="Probability of replacing each word by a random corpus word."
    )
    span_shuffle: float = Field(
        0.1, ge=0, le=1, description=f"Probability, at each word, of shuffling the {SPAN} words from it."
    )
    seed: int = Field(0, description="Seed of the edits (the same seed gives the same sentences).")

    @model_validator(mode="after")
    def _some_edit(self) -> Augment:
        if not (self.word_dropout or self.replace or self.span_shuffle):
            raise ValueError("augment: word_dropout, replace and span_shuffle are all 0: set one above 0")
        return self


def _replace(words: list[str], p: float, corpus: list[str], rng: random.Random) -> list[str]:
    """Each word, with probability p, swapped for a different word drawn from `corpus` (all the
    source words, so by their frequency)."""
    out = []
    for word in words:
        if rng.random() < p:
            for _ in range(TRIES):  # a frequent word can draw itself: draw again
                other = rng.choice(corpus)
                if other != word:
                    word = other
                    break
        out.append(word)
    return out


def _shuffle_spans(words: list[str], p: float, rng: random.Random) -> list[str]:
    """At each word, with probability p, permute the SPAN words from it (never in their order)."""
    out, i = list(words), 0
    while i < len(out) - 1:
        if rng.random() < p:
            _shuffle_at_(out, i, rng)
            i += SPAN
        else:
            i += 1
    return out


def _shuffle_at_(words: list[str], i: int, rng: random.Random) -> None:
    """Permute words[i : i + SPAN] in place (a rotation when the draw keeps their order)."""
    span = words[i : i + SPAN]
    shuffled = rng.sample(span, len(span))
    words[i : i + SPAN] = shuffled if shuffled != span else span[1:] + span[:1]


def _drop(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Each word dropped with probability p; one random word is kept when all would go."""
    kept = [w for w in words if rng.random() >= p]
    return kept or [rng.choice(words)]


def transform(words: list[str], cfg: Augment, corpus: list[str], rng: random.Random) -> list[str]:
    """One augmented copy of `words`: replace, then shuffle spans, then drop, each at its rate.

    An unchanged result gets one forced edit (an enabled kind, drawn by its rate) when one can
    change it; it is returned unchanged only when none can (e.g. one word, dropout only)."""
    out = _replace(words, cfg.replace, corpus, rng)
    out = _shuffle_spans(out, cfg.span_shuffle, rng)
    out = _drop(out, cfg.word_dropout, rng)
    if out != words:
        return out
    kinds = {
        "replace": cfg.replace,  # a one-word corpus may give back the same word: the caller dedupes
        "span_shuffle": cfg.span_shuffle if len(set(words)) > 1 else 0.0,
        "word_dropout": cfg.word_dropout if len(words) > 1 else 0.0,
    }
    if not any(kinds.values()):
        return out
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    if kind == "word_dropout":
        gone = rng.randrange(len(words))
        return words[:gone] + words[gone + 1 :]
    if kind == "span_shuffle":
        out = list(words)
        _shuffle_at_(out, rng.randrange(len(words) - 1), rng)
        return out
    at = rng.randrange(len(words))
    return words[:at] + _replace(words[at : at + 1], 1.0, corpus, rng) + words[at + 1 :]


def augment(sentences: list[str], cfg: Augment) -> list[tuple[int, str]]:
    """(source index, augmented sentence): up to `copies` per sentence, none equal to a source
    sentence or to another copy (fewer only when a sentence has no more new copies).

    Each sentence has its own generator seeded by (seed, its index), so the result depends only
    on the seed, the sentences and the settings (a resumed run rebuilds the same pool)."""
    split = [s.split() for s in sentences]
    corpus = [w for words in split for w in words]
    seen = {" ".join(words) for words in split}  # membership only: never iterated
    made: list[tuple[int, str]] = []
    for i, words in enumerate(split):
        if not words:
            continue
        rng = random.Random(f"{cfg.seed}:{i}")  # a str seed hashes the same in every process
        count = 0
        for _ in range(cfg.copies * TRIES):
            if count == cfg.copies:
                break
            text = " ".join(transform(words, cfg, corpus, rng))
            if text not in seen:
                seen.add(text)
                made.append((i, text))
                count += 1
    return made


def summary(sentences: list[str], made: list[tuple[int, str]], cfg: Augment) -> dict[str, Any]:
    """What the training record keeps: counts and the first few (source, augmented) pairs."""
    return {
        "source_sentences": len(sentences),
        "added": len(made),
        "wanted": cfg.copies * len(sentences),
        "examples": [{"source": sentences[i], "augmented": text} for i, text in made[:EXAMPLES]],
    }
