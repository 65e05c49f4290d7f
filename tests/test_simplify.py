import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli

from edgeslim import inspection, sessions


def _simplify(model: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return cli(["simplify", str(model), "-o", str(out), *args])


def test_relu_activation_exports_and_fuses(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    result = _simplify(tiny_factory("bert", "seq", 2), tmp_path / "s", "--activation", "relu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "config.json").read_text())["hidden_act"] == "relu"
    assert (
        cli(
            ["export", str(tmp_path / "s"), "--task", "sequence-classification", "-o", str(tmp_path / "e")]
        ).exit_code
        == 0
    )
    fused = cli(["optimize", str(tmp_path / "e"), "-o", str(tmp_path / "f"), "--require-full-fusion"])
    assert fused.exit_code == 0, fused.output


def test_shared_layers_stored_once_in_onnx(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny_factory("bert", "seq", 2)
    assert _simplify(model, tmp_path / "s", "--share-layers", "2").exit_code == 0
    for name, src in (("plain", model), ("shared", tmp_path / "s")):
        assert (
            cli(
                ["export", str(src), "--task", "sequence-classification", "-o", str(tmp_path / name)]
            ).exit_code
            == 0
        )
    plain = inspection.inspect(tmp_path / "plain")
    shared = inspection.inspect(tmp_path / "shared")
    assert shared["parameters"] < plain["parameters"] * 0.75  # one layer's weights stored once
    assert shared["size_bytes"] < plain["size_bytes"]

    def weight_initializers(name: str) -> int:
        graph = inspection.load_graph(tmp_path / name / "model.onnx").graph
        return sum(i.name.startswith("onnx::MatMul") for i in graph.initializer)

    assert (
        weight_initializers("plain") == 12 and weight_initializers("shared") == 6
    )  # one initializer per weight
    session_out = sessions.run(
        sessions.session(tmp_path / "shared" / "model.onnx"),
        {
            "input_ids": np.full((1, 5), 7),
            "attention_mask": np.ones((1, 5), dtype=np.int64),
            "token_type_ids": np.zeros((1, 5), dtype=np.int64),
        },
    )
    assert np.isfinite(session_out["logits"]).all()  # onnxruntime still runs it
    result = _simplify(model, tmp_path / "x", "--share-layers", "3")
    assert result.exit_code == 3 and "divide" in result.output


def test_trimmed_vocabulary_equals_original_in_vocabulary(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_factory("bert", "seq", 2)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w1 w2 w3 w4\nw5 w6 w1\n")
    result = _simplify(model, tmp_path / "t", "--trim-vocab", str(corpus))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "t" / "edgeslim-simplify.json").read_text())["vocabulary"]
    assert record["vocab_after"] == 11 and record["vocab_before"] == 95  # 6 words + 5 special tokens
    for name, src in (("orig", model), ("trim", tmp_path / "t")):
        assert (
            cli(
                ["export", str(src), "--task", "sequence-classification", "-o", str(tmp_path / name)]
            ).exit_code
            == 0
        )
    from edgeslim import data

    examples = data.Examples("x", ["w1 w2 w3", "w6 w5 w4 w1"])
    outs = {}
    for name in ("orig", "trim"):
        feeds = list(data.batches(tmp_path / name, examples, 2, 64))
        assert feeds[0]["input_ids"].max() < (95 if name == "orig" else 11)  # ids within the new range
        outs[name] = sessions.run(sessions.session(tmp_path / name / "model.onnx"), feeds[0])["logits"]
    np.testing.assert_allclose(outs["trim"], outs["orig"], atol=1e-5)
    (tmp_path / "empty.txt").write_text("zzz qqq\n")
    result = _simplify(model, tmp_path / "z", "--trim-vocab", str(tmp_path / "empty.txt"))
    assert result.exit_code == 3 and "no tokens" in result.output


def test_shared_layers_recover_tied_and_stay_shared(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    result = _simplify(
        teacher, tmp_path / "s", "--share-layers", "2", "--recover-with", str(teacher), "--recover-steps", "5"
    )
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "s" / "model.safetensors")
    layer = "bert.encoder.layer.{}.intermediate.dense.weight"
    assert torch.equal(weights[layer.format(0)], weights[layer.format(1)])  # trained as one module
    before = load_file(teacher / "model.safetensors")[layer.format(0)]
    assert not torch.equal(weights[layer.format(0)], before)  # and recovery did train them
    record = json.loads((tmp_path / "s" / "edgeslim-simplify.json").read_text())
    assert record["shared_groups"] == [[0, 1]] and "student_best" in record["recovery"]
    pruned = cli(["prune", str(tmp_path / "s"), "-o", str(tmp_path / "p"), "--heads", "0.5"])
    assert pruned.exit_code == 3 and "prune first" in pruned.output


def test_trim_keeps_character_pieces_so_unseen_words_do_not_become_unknown(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from edgeslim import simplify

    vocab = {t: i for i, t in enumerate(["[UNK]", "hello", "w", "##o", "##r", "##l", "##d", "é", "##é"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    assert simplify._char_pieces(vocab, "none") == set()
    assert simplify._char_pieces(vocab, "ascii") == {2, 3, 4, 5, 6}
    assert simplify._char_pieces(vocab, "all") == {2, 3, 4, 5, 6, 7, 8}
    assert simplify.unknown_fraction(path, ["hello world"]) == 0.0  # w ##o ##r ##l ##d
    del vocab["##d"]
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    assert simplify.unknown_fraction(path, ["hello world"]) == 0.5  # hello, [UNK]


@pytest.mark.parametrize(("keep", "kept"), [("ascii", {"x", "##x"}), ("none", set())])
def test_trim_vocab_keeps_character_pieces(
    tiny_factory: Callable[..., Path], tmp_path: Path, keep: str, kept: set[str]
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_factory("bert", "seq", 2), model)
    spec = json.loads((model / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["x"], vocab["##x"] = vocab.pop("w88"), vocab.pop("w89")  # two single-character pieces
    (model / "tokenizer.json").write_text(json.dumps(spec))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w1 w2 w3\n")
    result = _simplify(model, tmp_path / "t", "--trim-vocab", str(corpus), "--trim-keep-chars", keep)
    assert result.exit_code == 0, result.output
    trimmed = json.loads((tmp_path / "t" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {"x", "##x"} & set(trimmed) == kept and {"w1", "w2", "w3"} <= set(trimmed)
    record = json.loads((tmp_path / "t" / "edgeslim-simplify.json").read_text())["vocabulary"]
    assert record["kept_char_pieces"] == len(kept) and record["vocab_after"] == 8 + len(kept)
    assert set(record["eval_unknown_fraction"]) == {"data", "before", "after"}
