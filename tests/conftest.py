"""Tiny seeded random models (hidden 32, 2 layers) for every supported architecture."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

WORDS = [f"w{i}" for i in range(90)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]  # 95 tokens


def _config(arch: str, **extra: object) -> object:
    import transformers as tf

    common = dict(
        vocab_size=len(VOCAB),
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_size=32,
        intermediate_size=37,
        max_position_embeddings=64,
        **extra,
    )
    if arch == "bert":
        return tf.BertConfig(type_vocab_size=2, **common)
    if arch == "electra":
        return tf.ElectraConfig(embedding_size=16, type_vocab_size=2, **common)
    if arch == "roberta":
        roberta = {**common, "max_position_embeddings": 66, "pad_token_id": 0, "type_vocab_size": 1}
        return tf.RobertaConfig(**roberta)
    if arch == "xlm-roberta":
        xlmr = {**common, "max_position_embeddings": 66, "pad_token_id": 0, "type_vocab_size": 1}
        return tf.XLMRobertaConfig(**xlmr)
    if arch == "deberta-v2":
        return tf.DebertaV2Config(
            relative_attention=True, pos_att_type=["p2c", "c2p"], type_vocab_size=0, **common
        )
    if arch == "distilbert":
        return tf.DistilBertConfig(
            vocab_size=len(VOCAB),
            n_layers=2,
            n_heads=4,
            dim=32,
            hidden_dim=37,
            max_position_embeddings=64,
            **extra,
        )
    raise ValueError(arch)


def make_tiny(directory: Path, arch: str = "bert", head: str = "base", num_labels: int = 2) -> Path:
    """Save a seeded random `arch` model with a WordPiece tokenizer into `directory`."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    extra = {} if head == "base" else {"num_labels": num_labels}
    config = _config(arch, **extra)
    auto = {
        "base": tf.AutoModel,
        "seq": tf.AutoModelForSequenceClassification,
        "tok": tf.AutoModelForTokenClassification,
    }[head]
    model = auto.from_config(config)
    with torch.no_grad():  # fresh inits repeat values (zero biases, unit LayerNorm weights)
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tf.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per session) and return a tiny model directory."""
    made: dict[tuple[str, str, int], Path] = {}

    def factory(arch: str = "bert", head: str = "base", num_labels: int = 2) -> Path:
        key = (arch, head, num_labels)
        if key not in made:
            made[key] = make_tiny(tmp_path_factory.mktemp(f"{arch}-{head}"), arch, head, num_labels)
        return made[key]

    return factory


@pytest.fixture(scope="session")
def tiny_bert(tiny_factory: Callable[..., Path]) -> Path:
    return tiny_factory("bert")


@pytest.fixture(scope="session")
def bert_fp32(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported tiny BERT artifact (feature-extraction)."""
    out = tmp_path_factory.mktemp("art") / "bert-fp32"
    result = cli(["export", str(tiny_bert), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def bert_fused(bert_fp32: Path) -> Path:
    out = bert_fp32.parent / "bert-fused"
    result = cli(["optimize", str(bert_fp32), "-o", str(out), "--require-full-fusion"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def cls_artifact(tiny_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported tiny BERT sequence classifier (2 labels)."""
    out = tmp_path_factory.mktemp("cls") / "cls-fp32"
    result = cli(
        ["export", str(tiny_factory("bert", "seq", 2)), "--task", "sequence-classification", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


# Small training runs for tests: 96 training / 32 dev rows, evaluations and checkpoints every 4 steps.
TRAIN_FAST = ["--train-size", "96", "--eval-size", "32", "--batch-size", "16"]
TRAIN_FAST += ["--eval-every", "4", "--save-every", "4"]


@contextlib.contextmanager
def lock_held_elsewhere(target: Path) -> Iterator[int]:
    """Another process holds edgeslim's lock on `target` until the block ends; yields its pid."""
    import subprocess
    import sys

    script = (
        "import sys, time; from pathlib import Path; from edgeslim import locking\n"
        "with locking.hold(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def similar_pairs(path: Path, seed: int = 0, sign: int = 1) -> Path:
    """40 in-vocabulary sentence pairs (columns a, b, score; TAB- or comma-separated by suffix):
    b is a with k of its 6 words replaced, score sign * (6 - k)."""
    import random

    rng, sep, rows = random.Random(seed), "\t" if path.suffix == ".tsv" else ",", []
    for _ in range(40):
        a = [f"w{rng.randrange(90)}" for _ in range(6)]
        b, k = list(a), rng.randint(1, 5)
        for i in rng.sample(range(6), k):
            b[i] = f"w{rng.randrange(90)}"
        rows.append(sep.join([" ".join(a), " ".join(b), str(sign * (6 - k))]) + "\n")
    path.write_text(sep.join(["a", "b", "score"]) + "\n" + "".join(rows))
    return path


def cli(args: list[str]):  # type: ignore[no-untyped-def]
    """Invoke the edgeslim CLI in-process through typer's runner."""
    from edgeslim.cli import app

    return CliRunner().invoke(app, args)


def leftovers(directory: Path) -> list[str]:
    """Temporary names a failed write might leave behind."""
    return [p.name for p in directory.iterdir() if ".tmp" in p.name or ".old" in p.name]


def ort_outputs(artifact: Path, texts: list[str], pairs: list[str] | None = None) -> dict:
    """Every output of `artifact` on `texts`, computed with plain onnxruntime and the artifact's
    own tokenizer (not through edgeslim), for tests that check edgeslim's figures."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(artifact)(texts, pairs, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.asarray(batch[i.name], dtype=np.int64) for i in sess.get_inputs()}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


@pytest.fixture(scope="session")
def balanced_cls(
    tiny_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A tiny 2-label classifier whose predictions split 60 texts about evenly, exported as is
    ("artifact") and with its head negated ("negated": every prediction flipped); "own" holds the
    texts labelled with the artifact's own predictions, "flipped" with the other class."""
    import random

    import torch
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    source = tiny_factory("bert", "seq", 2)
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(90)}" for _ in range(rng.randint(2, 12))) for _ in range(80)]
    base = tmp_path_factory.mktemp("balanced")
    made: dict[str, Path] = {}
    for name, sign in (("artifact", 1.0), ("negated", -1.0)):
        model = AutoModelForSequenceClassification.from_pretrained(source).eval()
        with torch.no_grad():  # spread the (text-dependent) margins, then centre them on 0
            model.classifier.weight.mul_(100.0)
            batch = BertTokenizerFast.from_pretrained(source)(texts, padding=True, return_tensors="pt")
            margin = model(**batch).logits @ torch.tensor([-1.0, 1.0])
            model.classifier.bias[1] -= margin.median()
            model.classifier.weight.mul_(sign)
            model.classifier.bias.mul_(sign)
        model.save_pretrained(base / f"{name}-hf")
        for item in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (base / f"{name}-hf" / item).write_bytes((source / item).read_bytes())
        made[name] = base / name
        result = cli(
            ["export", str(base / f"{name}-hf"), "--task", "sequence-classification", "-o", str(made[name])]
        )
        assert result.exit_code == 0, result.output
    logits = ort_outputs(made["artifact"], texts)["logits"]
    sure = [i for i, row in enumerate(logits) if abs(row[1] - row[0]) > 1e-3]  # no near-ties
    preds = logits.argmax(-1)
    for name, flip in (("own", 0), ("flipped", 1)):
        made[name] = base / f"{name}.tsv"
        rows = "".join(f"{texts[i]}\t{int(preds[i]) ^ flip}\n" for i in sure[:60])
        made[name].write_text("sentence\tlabel\n" + rows)
    assert 20 <= sum(int(preds[i]) for i in sure[:60]) <= 40  # both classes well represented
    return made
