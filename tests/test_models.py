"""models: per-architecture facts read from config.json."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from edgeslim import artifacts, models
from edgeslim.errors import InputError


def test_pad_id_reads_the_config() -> None:
    assert models.pad_id({"model_type": "roberta", "pad_token_id": 1}) == 1
    assert models.pad_id({"model_type": "bert", "pad_token_id": None}) == 0
    assert models.pad_id({"model_type": "bert"}) == 0


def test_export_pads_parity_cases_with_the_roberta_pad_id(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    source = tmp_path / "roberta-pad1"
    shutil.copytree(tiny_factory("roberta"), source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "pad_token_id": 1}))
    out = tmp_path / "out"
    result = cli(["export", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out / artifacts.REFERENCE, allow_pickle=False) as data:
        ids, mask = data["case0/in/input_ids"], data["case0/in/attention_mask"]
    assert (mask == 0).any() and (ids[mask == 0] == 1).all()


def test_label_maps_both_directions_and_bad_ids(tmp_path: Path) -> None:
    config = {"label2id": {"neg": "0", "pos": 1}, "id2label": {"0": "neg", "1": "pos"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert models.label_maps(tmp_path) == ({"neg": 0, "pos": 1}, {0: "neg", 1: "pos"})
    (tmp_path / "config.json").write_text(json.dumps({"label2id": {"neg": "x"}}))
    with pytest.raises(InputError, match="integer ids"):
        models.label_maps(tmp_path)
