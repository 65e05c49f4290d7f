"""Datasets: built-in names (sst2:dev, ...) and user TSV/CSV/JSONL files; tokenization and
padded batches with the artifact's own tokenizer (tokenizers library: no torch needed)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import InputError, MissingDependency

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Builtin:
    """Where a built-in dataset lives (relative to a data dir) and its columns."""

    file: str
    text: str
    pair: str | None = None
    label: str | None = None


BUILTIN: dict[str, Builtin] = {
    "sst2:train": Builtin("sst2/glue_train.tsv", "sentence", label="label"),
    "sst2:dev": Builtin("sst2/glue_dev.tsv", "sentence", label="label"),
    "stsb:train": Builtin("stsb/train.tsv", "sentence1", "sentence2", "score"),
    "stsb:dev": Builtin("stsb/dev.tsv", "sentence1", "sentence2", "score"),
    "trec:train": Builtin("trec/train.tsv", "question", label="coarse_label"),
    "trec:test": Builtin("trec/test.tsv", "question", label="coarse_label"),
    "conll2003:train": Builtin("conll2003/train.tsv", "tokens", label="ner_tags"),
    "conll2003:valid": Builtin("conll2003/valid.tsv", "tokens", label="ner_tags"),
    "conll2003:test": Builtin("conll2003/test.tsv", "tokens", label="ner_tags"),
    "wikitext2": Builtin("wikitext2/valid.txt", "text"),
}


@dataclass(frozen=True)
class Examples:
    """Texts, optional second texts (pairs) and optional labels, aligned by index."""

    name: str
    texts: list[str]
    pairs: list[str] | None = None
    labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, count: int) -> Examples:
        """The first `count` examples (all when count exceeds the size)."""
        cut = slice(0, count)
        return Examples(
            self.name,
            self.texts[cut],
            self.pairs[cut] if self.pairs else None,
            self.labels[cut] if self.labels else None,
        )


# Only CoNLL-2003 (Reuters text, not redistributable) is looked up outside the package.
EXTERNAL_ONLY = ("conll2003",)


def data_dirs(data_dir: Path | None = None, spec: str = "") -> list[Path]:
    """Where built-in dataset `spec` is looked up, in order.

    An explicit --data-dir, then $EDGESLIM_DATA_DIR, then the data shipped in the package;
    CoNLL-2003, which is never shipped, also in a shared/data folder beside the checkout or
    the working directory.
    """
    dirs = [data_dir] if data_dir else []
    if os.environ.get("EDGESLIM_DATA_DIR"):
        dirs.append(Path(os.environ["EDGESLIM_DATA_DIR"]))
    if spec.split(":")[0] in EXTERNAL_ONLY:
        return [*dirs, *beside_checkout()]
    return [*dirs, packaged_data()]


def beside_checkout() -> list[Path]:
    """shared/data folders beside the checkout and beside the working directory (CoNLL only)."""
    repo = Path(__file__).resolve().parents[1]
    return [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def packaged_data() -> Path:
    """The folder of data sets shipped inside the package (edgeslim/datasets)."""
    from importlib.resources import files

    return Path(str(files("edgeslim") / "datasets"))


def load(
    spec: str,
    text_column: str | None = None,
    pair_column: str | None = None,
    label_column: str | None = None,
    data_dir: Path | None = None,
) -> Examples:
    """A built-in name (`sst2:dev`) or a .tsv/.csv/.jsonl/.txt path -> Examples."""
    if spec in BUILTIN:
        entry = BUILTIN[spec]
        places = data_dirs(data_dir, spec)
        for base in places:
            if (base / entry.file).is_file():
                return _read(
                    base / entry.file,
                    spec,
                    text_column or entry.text,
                    pair_column or entry.pair,
                    label_column or entry.label,
                )
        raise InputError(
            f"dataset '{spec}' not found in {', '.join(map(str, places))}: "
            "pass --data-dir DIR (a folder holding " + entry.file + ") or set EDGESLIM_DATA_DIR"
        )
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"data '{spec}' not found: give a .tsv/.csv/.jsonl/.txt file "
            f"or a built-in name ({', '.join(BUILTIN)})"
        )
    return _read(path, path.name, text_column, pair_column, label_column)


def load_labelled(
    spec: str,
    text_column: str | None,
    pair_column: str | None,
    label_column: str | None,
    data_dir: Path | None,
    limit: int | None = None,
) -> Examples:
    """Like load(), for data that must carry labels: user files default to a `label` column."""
    default = None if spec in BUILTIN else "label"
    examples = load(spec, text_column, pair_column, label_column or default, data_dir)
    return examples.head(limit) if limit else examples


def _rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8", newline="") as handle:
        if suffix == ".jsonl":
            try:
                return [json.loads(line) for line in handle if line.strip()]
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: invalid JSON line ({exc})") from None
        if suffix in (".tsv", ".csv"):
            if suffix == ".tsv":  # shared/data TSVs are unquoted and sentences contain '"'
                return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
            return list(csv.DictReader(handle))
        if suffix == ".txt":
            return [{"text": line.strip()} for line in handle if line.strip()]
    raise InputError(f"{path}: unsupported file type '{suffix}': use .tsv, .csv, .jsonl or .txt")


TEXT_COLUMNS = ("text", "sentence", "question", "sentence1", "tokens")


def _read(path: Path, name: str, text: str | None, pair: str | None, label: str | None) -> Examples:
    rows = _rows(path)
    if not rows:
        raise InputError(f"{path} has no examples")
    columns = list(rows[0])
    text = text or next((c for c in TEXT_COLUMNS if c in columns), "text")
    for role, column in (("text", text), ("pair", pair), ("label", label)):
        if column is not None and column not in columns:
            raise InputError(
                f"{path} has no {role} column '{column}'; columns: {', '.join(columns)} "
                f"(choose with --{role}-column)"
            )
    return Examples(
        name,
        [str(r[text]) for r in rows],
        [str(r[pair]) for r in rows] if pair else None,
        [str(r[label]) for r in rows] if label else None,
    )


def tokenizer(artifact: Path, max_length: int) -> Any:
    """The artifact's fast tokenizer (tokenizer.json), truncating to `max_length`."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependency("tokenizers is not installed: pip install 'edgeslim[runtime]'") from None
    path = artifact / "tokenizer.json"
    if not path.exists():
        raise InputError(f"{artifact} has no tokenizer.json: re-export it from a model with a fast tokenizer")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length)
    tok.no_padding()
    return tok


def batches(
    artifact: Path,
    examples: Examples,
    batch_size: int,
    max_length: int,
    pad_to: int | None = None,
    words: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Padded feeds (to the longest in each batch, or to `pad_to`), in dataset order.

    With `words`, texts are space-separated words (CoNLL) and each batch also carries
    `word_ids` (B, T): the word each token starts or continues, -1 for special/padding.
    """
    import numpy as np

    tok = tokenizer(artifact, max_length)
    config = json.loads((artifact / "config.json").read_text())
    pad_id = int(config.get("pad_token_id") or 0)
    for start in range(0, len(examples), batch_size):
        texts = examples.texts[start : start + batch_size]
        if words:
            encs = tok.encode_batch([t.split(" ") for t in texts], is_pretokenized=True)
        elif examples.pairs:
            encs = tok.encode_batch(list(zip(texts, examples.pairs[start : start + batch_size], strict=True)))
        else:
            encs = tok.encode_batch(texts)
        width = pad_to or max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        word_ids = np.full_like(ids, -1)
        for row, enc in enumerate(encs):
            n = min(len(enc.ids), width)
            ids[row, :n], mask[row, :n], types[row, :n] = enc.ids[:n], 1, enc.type_ids[:n]
            if words:
                word_ids[row, :n] = [-1 if w is None else w for w in enc.word_ids[:n]]
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        yield {**feeds, "word_ids": word_ids} if words else feeds
