"""Datasets: built-in names (sst2:dev, ...) and user TSV/CSV/JSONL files; tokenization and
padded batches with the artifact's own tokenizer (tokenizers library: no torch needed)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
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

    def take(self, rows: list[int], name: str) -> Examples:
        """The examples at `rows`, in that order, named `name`."""
        return Examples(
            name,
            [self.texts[i] for i in rows],
            [self.pairs[i] for i in rows] if self.pairs else None,
            [self.labels[i] for i in rows] if self.labels else None,
        )


# A training set's own dev split, used when no --eval is given.
DEV_SPLITS: dict[str, str] = {
    "sst2:train": "sst2:dev",
    "stsb:train": "stsb:dev",
    "trec:train": "trec:test",
    "conll2003:train": "conll2003:valid",
}
HELDOUT_FRACTION = 0.1
HELDOUT_SEED = 0


def hold_out(
    examples: Examples, fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED
) -> tuple[Examples, Examples]:
    """(train, dev): a seeded random `fraction` of the rows (at least one) held out as dev.

    The two never share a row; both keep the file's order."""
    import numpy as np

    if len(examples) < 2:
        raise InputError(
            f"{examples.name} has {len(examples)} example(s): too few to hold out a dev set; "
            "give more data or a dev set with --eval DATA"
        )
    count = max(1, round(len(examples) * fraction))
    order = np.random.default_rng(seed).permutation(len(examples))
    dev_rows, train_rows = sorted(order[:count].tolist()), sorted(order[count:].tolist())
    dev_name = f"{examples.name} (held-out {fraction:.0%}, seed {seed}, {count} rows)"
    return examples.take(train_rows, examples.name), examples.take(dev_rows, dev_name)


def train_and_dev(
    spec: str,
    eval_spec: str | None,
    columns: tuple[str | None, str | None, str | None],
    data_dir: Path | None,
    sizes: tuple[int | None, int | None] = (None, None),
) -> tuple[Examples, Examples, str]:
    """(train, dev, how the dev set was chosen) for training steps, labels required.

    Without `eval_spec`, a built-in training set uses its own dev split (DEV_SPLITS) and any
    other data a seeded held-out part of itself, so a user's columns are never read from
    an unrelated default set."""
    from edgeslim import ui

    train = load_labelled(spec, *columns, data_dir)
    if eval_spec is not None:
        dev, how = load_labelled(eval_spec, *columns, data_dir), eval_spec
    elif spec in DEV_SPLITS:
        dev, how = load_labelled(DEV_SPLITS[spec], *columns, data_dir), DEV_SPLITS[spec]
        ui.note(f"note: no --eval given: evaluating on {how}, the dev split of {spec}")
    else:
        train, dev = hold_out(train)
        how = dev.name
        ui.note(f"note: no --eval given: evaluating on {how}; the rest ({len(train)} rows) trains")
    train_size, eval_size = sizes
    return train.head(train_size) if train_size else train, dev.head(eval_size) if eval_size else dev, how


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
            "pass --data-dir DIR (in a recipe: data_dir: DIR in the step), a folder holding "
            + entry.file
            + ", or set EDGESLIM_DATA_DIR"
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


# A longer field is refused rather than read: it would be truncated to max_length tokens
# anyway, and tokenizing megabytes of one line stalls a run for minutes.
MAX_FIELD_CHARS = 1_000_000


def _rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a user file as dicts; InputError (never a traceback) for what cannot be read.

    utf-8-sig: a byte-order mark (Excel's CSV export) is not part of the first column's name."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".tsv", ".csv", ".txt"):
        raise InputError(f"{path}: unsupported file type '{suffix}': use .tsv, .csv, .jsonl or .txt")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if suffix == ".jsonl":
                return _jsonl_rows(path, handle)
            if suffix == ".txt":
                return [{"text": line.strip()} for line in _lines(path, handle) if line.strip()]
            return _csv_rows(path, handle, suffix)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): "
            "re-save it as UTF-8"
        ) from None


def _lines(path: Path, handle: Any) -> Iterator[str]:
    for number, line in enumerate(handle, 1):
        if len(line) > MAX_FIELD_CHARS:
            raise InputError(
                f"{path} line {number} has {len(line):,} characters (limit {MAX_FIELD_CHARS:,}): "
                "split or trim it"
            )
        yield line


def _jsonl_rows(path: Path, handle: Any) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(_lines(path, handle), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: invalid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InputError(
                f"{path} line {number} is a JSON {type(row).__name__}: each line must be an object "
                'such as {"text": ..., "label": ...}'
            )
        rows.append(row)
    return rows


def _csv_rows(path: Path, handle: Any, suffix: str) -> list[dict[str, Any]]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    if suffix == ".tsv":  # shared/data TSVs are unquoted and sentences contain '"'
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:  # quoted fields may hold commas and newlines
        reader = csv.DictReader(handle)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(
            f"{path} line {reader.line_num}: {exc} (limit {MAX_FIELD_CHARS:,} characters a field): "
            "split or trim that field"
        ) from None
    for number, row in enumerate(rows, 2):
        if None in row.values() or None in row:
            raise InputError(
                f"{path} row {number} has {'fewer' if None in row.values() else 'more'} fields than "
                f"its header ({', '.join(reader.fieldnames or [])}): fix that row"
                + (" (a tab inside a sentence?)" if suffix == ".tsv" else "")
            )
    return rows


TEXT_COLUMNS = ("text", "sentence", "question", "sentence1", "tokens")


def _read(path: Path, name: str, text: str | None, pair: str | None, label: str | None) -> Examples:
    rows = _rows(path)
    if not rows:
        raise InputError(f"{path} has no examples: give a file with a header row and at least one row")
    columns = list(rows[0])
    text = text or next((c for c in TEXT_COLUMNS if c in columns), "text")
    for role, column in (("text", text), ("pair", pair), ("label", label)):
        if column is not None and column not in columns:
            raise InputError(
                f"{path} has no {role} column '{column}'; columns: {', '.join(map(str, columns))} "
                f"(choose with --{role}-column)"
            )
    wanted = [c for c in (text, pair, label) if c is not None]
    for number, row in enumerate(rows, 1):
        missing = [c for c in wanted if row.get(c) is None]
        if missing:  # JSONL rows need not share keys; a null is as absent as a missing key
            raise InputError(
                f"{path} row {number} has no '{missing[0]}' (keys: {', '.join(map(str, row)) or 'none'}): "
                "every row needs the text (and pair/label) fields"
            )
    return Examples(
        name,
        [_field(r[text]) for r in rows],
        [_field(r[pair]) for r in rows] if pair else None,
        [_field(r[label]) for r in rows] if label else None,
    )


def _field(value: Any) -> str:
    """A cell as text; JSON lists (CoNLL tokens/tags) as space-separated items."""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        raise InputError(f"a field holds a JSON object ({json.dumps(value)[:60]}): expected text or a number")
    return str(value)


def scores(examples: Examples) -> list[float]:
    """Regression targets / similarity scores as floats; InputError naming the first bad one."""
    import math

    values = []
    for number, label in enumerate(examples.labels or [], 1):
        try:
            value = float(label)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            what = "non-numeric" if value is None else "not a finite number"
            raise InputError(
                f"{examples.name} row {number}: score '{label[:40]}' is {what}: "
                "regression and similarity data need numeric scores"
            )
        values.append(value)
    return values


def tokenizer(artifact: Path, max_length: int) -> Any:
    """The artifact's fast tokenizer (tokenizer.json), truncating to `max_length`; refused when
    it has more tokens than the model's embedding table (its ids would index past it)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependency("tokenizers is not installed: pip install 'edgeslim[runtime]'") from None
    from edgeslim import models

    path = artifact / "tokenizer.json"
    if not path.exists():
        raise InputError(f"{artifact} has no tokenizer.json: re-export it from a model with a fast tokenizer")
    tok = models.read_tokenizer(path, Tokenizer)
    models.check_vocab(
        tok.get_vocab_size(with_added_tokens=True), models.read_json(artifact / "config.json"), path
    )
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
    from edgeslim import models

    pad_id = models.pad_id(models.read_json(artifact / "config.json"))
    for start in range(0, len(examples), batch_size):
        texts = examples.texts[start : start + batch_size]
        if words:
            encs = tok.encode_batch([t.split(" ") for t in texts], is_pretokenized=True)
        elif examples.pairs:
            encs = tok.encode_batch(list(zip(texts, examples.pairs[start : start + batch_size], strict=True)))
        else:
            encs = tok.encode_batch(texts)
        feeds = pad([e.ids for e in encs], [e.type_ids for e in encs], pad_id, pad_to)
        if not words:
            yield feeds
            continue
        word_ids = np.full_like(feeds["input_ids"], -1)  # (B, T)
        for row, enc in enumerate(encs):
            n = min(len(enc.ids), word_ids.shape[1])
            word_ids[row, :n] = [-1 if w is None else w for w in enc.word_ids[:n]]
        yield {**feeds, "word_ids": word_ids}


def pad(
    ids: Sequence[Sequence[int] | np.ndarray],
    types: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    width: int | None = None,
) -> dict[str, np.ndarray]:
    """input_ids, attention_mask and token_type_ids (B, T), right-padded with `pad_id` to
    `width` (default: the longest row; a longer row is cut)."""
    import numpy as np

    width = width or max(len(row) for row in ids)
    out = np.full((len(ids), width), pad_id, dtype=np.int64)  # (B, T)
    mask, token_types = np.zeros_like(out), np.zeros_like(out)
    for row, (row_ids, row_types) in enumerate(zip(ids, types, strict=True)):
        n = min(len(row_ids), width)
        out[row, :n], mask[row, :n], token_types[row, :n] = row_ids[:n], 1, row_types[:n]
    return {"input_ids": out, "attention_mask": mask, "token_type_ids": token_types}
