"""Real-model checks on the packaged all-MiniLM-L6-v2 (run with: pytest -m slow)."""

from pathlib import Path

import pytest
from conftest import cli

from edgeslim import artifacts

pytestmark = pytest.mark.slow


def test_minilm_export_optimize_parity_and_fusion(tmp_path: Path) -> None:
    assert cli(["export", "minilm", "-o", str(tmp_path / "fp32")]).exit_code == 0
    result = cli(["optimize", str(tmp_path / "fp32"), "-o", str(tmp_path / "fused"), "--require-full-fusion"])
    assert result.exit_code == 0, result.output
    manifest = artifacts.read_manifest(tmp_path / "fused")
    for step in manifest["steps"]:
        cases = {c["shape"]: c for c in step["parity"]["cases"]}
        assert set(cases) == {"3x17", "1x256"}
        assert step["parity"]["max_abs_diff"] <= 1e-4
    kinds = manifest["steps"][-1]["fusion"]["kinds"]
    assert kinds["attention"]["found"] == 6 and kinds["skip_layer_norm"]["found"] == 12
    assert kinds["embed_layer_norm"]["found"] == 1 and kinds["gelu"]["found"] == 6


def test_minilm_embeddings_match_sentence_transformers(tmp_path: Path) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from edgeslim import models, sessions

    assert cli(["export", "minilm", "-o", str(tmp_path / "a")]).exit_code == 0
    texts = ["the movie was great", "a dull , lifeless film that goes nowhere"]
    tok = Tokenizer.from_file(str(tmp_path / "a" / "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in enc]),
        "attention_mask": np.array([e.attention_mask for e in enc]),
        "token_type_ids": np.array([e.type_ids for e in enc]),
    }
    ours = sessions.run(sessions.session(tmp_path / "a" / "model.onnx"), feeds)["sentence_embedding"]
    reference = SentenceTransformer(str(models.resolve("minilm")), device="cpu").encode(texts)
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)  # the ST pipeline normalizes
    np.testing.assert_allclose(ours, reference, atol=1e-4)
