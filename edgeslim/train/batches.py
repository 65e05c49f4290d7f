"""Training data: tokenized once (cached on disk), length-bucketed, dynamically padded batches."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import data


@dataclass(frozen=True)
class Encoded:
    """Token ids per example (ragged), optional labels (class ids, floats, or per-token ids)."""

    ids: list[np.ndarray]
    types: list[np.ndarray]
    labels: list[Any] | None

    def __len__(self) -> int:
        return len(self.ids)


def cache_dir() -> Path:
    """$EDGESLIM_CACHE, else ~/.cache/edgeslim."""
    return Path(os.environ.get("EDGESLIM_CACHE", Path.home() / ".cache" / "edgeslim"))


def encode(
    model_dir: Path, examples: data.Examples, max_length: int, labels: list[Any] | None, words: bool = False
) -> Encoded:
    """Tokenize with the model's tokenizer; cached under a hash of tokenizer, texts and length.

    With `words` (token classification), texts are space-separated words and `labels` hold one
    id list per sentence; the result's labels are per token: the word's id on its first
    sub-token, -100 (ignored by the loss) elsewhere."""
    if words:
        return _encode_words(model_dir, examples, max_length, labels or [])
    tokenizer_file = model_dir / "tokenizer.json"
    digest = hashlib.sha256(tokenizer_file.read_bytes())
    digest.update(json.dumps([examples.texts, examples.pairs, max_length]).encode())
    path = cache_dir() / "tokens" / f"{digest.hexdigest()[:24]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            lengths = stored["lengths"]
            ids = np.split(stored["ids"], np.cumsum(lengths)[:-1])
            types = np.split(stored["types"], np.cumsum(lengths)[:-1])
        return Encoded(list(ids), list(types), labels)
    tok = data.tokenizer(model_dir, max_length)
    if examples.pairs:
        encs = tok.encode_batch(list(zip(examples.texts, examples.pairs, strict=True)))
    else:
        encs = tok.encode_batch(examples.texts)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
    types = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp, ids=np.concatenate(ids), types=np.concatenate(types), lengths=np.asarray([len(x) for x in ids])
    )
    os.replace(tmp, path)
    return Encoded(ids, types, labels)


def _encode_words(model_dir: Path, examples: data.Examples, max_length: int, labels: list[Any]) -> Encoded:
    tok = data.tokenizer(model_dir, max_length)
    encs = tok.encode_batch([t.split(" ") for t in examples.texts], is_pretokenized=True)
    per_token = []
    for enc, word_labels in zip(encs, labels, strict=True):
        seen: set[int] = set()
        row = []
        for word in enc.word_ids:
            row.append(-100 if word is None or word in seen else int(word_labels[word]))
            if word is not None:
                seen.add(word)
        per_token.append(np.asarray(row, dtype=np.int64))
    return Encoded(
        [np.asarray(e.ids, dtype=np.int64) for e in encs],
        [np.asarray(e.type_ids, dtype=np.int64) for e in encs],
        per_token,
    )


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within chunks of 50 batches by length, split,
    shuffle the batch order. Deterministic in (seed, epoch)."""
    rng = np.random.default_rng(seed + epoch)
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [[int(i) for i in part[j : j + batch_size]] for j in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(encoded: Encoded, indices: list[int], pad_id: int, label_kind: str) -> dict[str, Any]:
    """Torch tensors for one batch, padded to its longest example."""
    import torch

    feeds = data.pad([encoded.ids[i] for i in indices], [encoded.types[i] for i in indices], pad_id)
    batch: dict[str, Any] = {k: torch.from_numpy(v) for k, v in feeds.items()}  # (B, T) each
    if encoded.labels is not None:
        values = [encoded.labels[i] for i in indices]
        if label_kind == "token":
            labels = torch.full_like(batch["input_ids"], -100)
            for row, value in enumerate(values):
                labels[row, : len(value)] = torch.from_numpy(value)
            batch["labels"] = labels
        elif label_kind == "regression":
            batch["labels"] = torch.tensor(values, dtype=torch.float32)
        else:
            batch["labels"] = torch.tensor(values, dtype=torch.long)
    return batch
