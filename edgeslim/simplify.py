"""Structure simplification: simpler activations, cross-layer weight sharing, vocabulary
trimming (WordPiece tokenizers: the tokenizer and the embedding rows are rebuilt together)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeslim import models
from edgeslim.errors import InputError

ACTIVATIONS = ("relu", "gelu_new", "gelu")  # gelu_new: the tanh approximation


def set_activation_(model: Any, name: str) -> None:
    """Replace every FFN activation with `name` and record it in the config."""
    from transformers.activations import ACT2FN

    base = model.base_model
    for block in base.encoder.layer:
        block.intermediate.intermediate_act_fn = ACT2FN[name]
    model.config.hidden_act = name


def share_layers_(model: Any, group: int) -> list[list[int]]:
    """ALBERT-style sharing: each group of `group` consecutive layers takes its first layer's
    weights (values copied, so the saved model loads anywhere; the ONNX exporter then stores
    each shared weight once, because it deduplicates equal initializers)."""
    import torch

    layers = model.base_model.encoder.layer
    if group < 2 or len(layers) % group:
        raise InputError(f"--share-layers {group} must be >= 2 and divide the {len(layers)} layers")
    groups = [list(range(i, i + group)) for i in range(0, len(layers), group)]
    with torch.no_grad():
        for members in groups:
            source = layers[members[0]].state_dict()
            for index in members[1:]:
                layers[index].load_state_dict(source)
    model.config.shared_layer_groups = groups  # training re-ties them (models.tie_shared_)
    return groups


def _char_pieces(vocab: dict[str, int], which: str) -> set[int]:
    """Ids of single-character pieces and their `##` forms (`which`: none, ascii or all)."""
    if which == "none":
        return set()
    keep = set()
    for token, index in vocab.items():
        char = token[2:] if token.startswith("##") else token
        if len(char) == 1 and (which == "all" or (char.isascii() and char.isprintable())):
            keep.add(index)
    return keep


def unknown_fraction(tokenizer_json: Path, texts: list[str]) -> float:
    """Share of word pieces of `texts` that the tokenizer maps to its unknown token."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    unk = tok.token_to_id(json.loads(tokenizer_json.read_text())["model"]["unk_token"])
    ids = [i for enc in tok.encode_batch(texts, add_special_tokens=False) for i in enc.ids]
    return round(sum(i == unk for i in ids) / max(len(ids), 1), 5)


def trim_vocabulary_(
    model: Any, model_dir: Path, texts: list[str], out: Path, keep_chars: str = "ascii"
) -> dict[str, Any]:
    """Keep the tokens that occur in `texts` plus special tokens (and single-character pieces
    with their `##` forms, per `keep_chars`, so that words outside `texts` still split into
    pieces instead of becoming [UNK]); rewrite tokenizer.json and vocab.txt into `out` and
    shrink the word embeddings (and tied decoders) to match."""
    import torch
    from tokenizers import Tokenizer

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    if spec["model"]["type"] != "WordPiece":
        raise InputError(
            f"vocabulary trimming supports WordPiece tokenizers (BERT family); this one is "
            f"{spec['model']['type']}"
        )
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    used: set[int] = set()
    total = unknown = 0
    unk = spec["model"]["vocab"][spec["model"]["unk_token"]]
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        used.update(enc.ids)
        total += len(enc.ids)
        unknown += sum(i == unk for i in enc.ids)
    special = {t["id"] for t in spec["added_tokens"]} | {unk}
    old_vocab: dict[str, int] = spec["model"]["vocab"]
    chars = _char_pieces(old_vocab, keep_chars)
    keep = sorted((used | special | chars) & set(old_vocab.values()))
    if len(keep) <= len(special):
        raise InputError(
            "the corpus leaves no tokens besides the special ones: give a corpus of the task's text"
        )
    new_id = {old: new for new, old in enumerate(keep)}
    by_id = {i: t for t, i in old_vocab.items()}
    spec["model"]["vocab"] = {by_id[old]: new for old, new in new_id.items()}
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    for entry in (spec.get("post_processor") or {}).get("special_tokens", {}).values():
        entry["ids"] = [new_id[i] for i in entry["ids"]]
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (out / "vocab.txt").write_text("\n".join(by_id[old] for old in keep) + "\n")
    embeddings = model.get_input_embeddings()
    index = torch.tensor(keep)
    pad = new_id.get(models.pad_id(model.config.to_dict()))
    new = torch.nn.Embedding(len(keep), embeddings.weight.shape[1], padding_idx=pad)
    with torch.no_grad():
        new.weight.copy_(embeddings.weight[index])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value in new_id:
            setattr(model.config, name, new_id[value])
    return {
        "vocab_before": len(old_vocab),
        "vocab_after": len(keep),
        "kept_char_pieces": len(chars - used - special),
        "corpus_tokens": total,
        "corpus_unknown_fraction": round(unknown / max(total, 1), 5),
    }
