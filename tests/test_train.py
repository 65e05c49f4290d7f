import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TRAIN_FAST, cli, leftovers


def _finetune(model: Path, out: Path, *args: str) -> object:
    return cli(["finetune", str(model), "-o", str(out), *TRAIN_FAST, *args])


def test_finetune_then_export(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "teacher"
    result = _finetune(tiny_factory("bert"), out, "--max-steps", "8")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    record = json.loads((out / "edgeslim-train.json").read_text())
    assert record["steps"] == 8 and record["best"]["accuracy"] >= 0
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2  # evals at steps 4 and 8
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}
    assert not (out / "checkpoint").exists() and leftovers(tmp_path) == []
    exported = cli(["export", str(out), "--task", "sequence-classification", "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output


RUN = "import sys; from edgeslim.cli import main; sys.argv = ['edgeslim'] + sys.argv[1:]; main()"


def test_resume_after_kill_matches_uninterrupted(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = str(tiny_factory("bert"))
    args = ["finetune", model, *TRAIN_FAST, "--max-steps", "12"]
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-c", RUN, *args, "-o", str(whole)], check=True, capture_output=True)
    resumed = tmp_path / "resumed"
    env = {**os.environ, "EDGESLIM_FAULT_KILL_AT_STEP": "8"}
    killed = subprocess.run(
        [sys.executable, "-c", RUN, *args, "-o", str(resumed)], env=env, capture_output=True
    )
    assert killed.returncode == -9 and not resumed.exists()
    assert (tmp_path / ".resumed.partial" / "checkpoint").exists()
    again = subprocess.run(
        [sys.executable, "-c", RUN, *args, "-o", str(resumed)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert "resuming from step 8" in again.stderr
    a = json.loads((whole / "edgeslim-train.json").read_text())["losses"]
    b = json.loads((resumed / "edgeslim-train.json").read_text())["losses"]
    assert len(a) == len(b) == 12
    assert b[8:] == pytest.approx(a[8:], abs=1e-6)


def test_recipe_orders_model_steps_first(tiny_bert: Path, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: x\nmodel: {tiny_bert}\noutput: {tmp_path / 'o'}\nsteps:\n  - type: export\n"
        "  - type: finetune\n"
    )
    result = cli(["run", str(path)])
    assert result.exit_code == 3 and "before export" in result.output


def test_training_bad_input(
    tiny_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_factory("bert")
    (tmp_path / "nolabels.tsv").write_text("sentence\nw1 w2\n")
    result = _finetune(model, tmp_path / "o", "--data", str(tmp_path / "nolabels.tsv"), "--max-steps", "2")
    assert result.exit_code == 3 and "label" in result.output  # type: ignore[attr-defined]
    result = _finetune(
        model, tmp_path / "o", "--data", "stsb:train", "--eval", "stsb:dev", "--max-steps", "2"
    )
    assert result.exit_code == 3 and "right --task" in result.output  # type: ignore[attr-defined]
    (tmp_path / "words.tsv").write_text("sentence\tlabel\nw1\tgood\nw2\tbad\n")
    result = _finetune(
        model,
        tmp_path / "o",
        "--task",
        "regression",
        "--data",
        str(tmp_path / "words.tsv"),
        "--eval",
        str(tmp_path / "words.tsv"),
        "--max-steps",
        "2",
    )
    assert result.exit_code == 3 and "non-numeric" in result.output  # type: ignore[attr-defined]
    from edgeslim.config import make_config
    from edgeslim.steps.finetune import Config

    assert make_config(Config, precision="bf16").precision == "bf16"


@pytest.mark.parametrize(
    ("machine", "flags", "cuda", "refused"),
    [
        ("x86_64", {"avx2", "fma"}, False, True),  # Zen3: AVX2 only
        ("x86_64", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, False, False),  # Zen4
        ("x86_64", {"avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"}, False, False),  # AMX
        ("x86_64", {"avx2"}, True, False),  # a GPU does the bf16 work
        ("aarch64", {"asimd", "asimddp"}, False, True),
        ("aarch64", {"asimd", "bf16"}, False, False),
    ],
)
def test_bf16_refused_only_without_bf16_hardware(
    machine: str, flags: set[str], cuda: bool, refused: bool
) -> None:
    from edgeslim.errors import InputError
    from edgeslim.hardware import from_facts
    from edgeslim.train.loop import check_precision

    target = from_facts(machine, flags)
    check_precision("fp32", target, cuda)  # fp32 is never refused
    if refused:
        with pytest.raises(InputError, match="bf16"):
            check_precision("bf16", target, cuda)
    else:
        check_precision("bf16", target, cuda)


def test_nan_loss_stops_with_message(
    tiny_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from edgeslim.train import task

    def nan_loss(model: object, batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(**batch)  # type: ignore[operator]
        return out.loss * float("nan"), {}

    monkeypatch.setattr(task, "task_loss", nan_loss)
    result = _finetune(tiny_factory("bert"), tmp_path / "o", "--max-steps", "4")
    assert result.exit_code == 5 and "loss became nan" in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "o").exists()


def test_disk_full_while_checkpointing(
    tiny_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import safetensors.torch

    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def full(tensors: object, path: str, *a: object, **k: object) -> None:
        if str(path).endswith("optimizer.safetensors"):
            calls["n"] += 1
            if calls["n"] >= 2:  # the first checkpoint fits, the second does not
                raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    result = _finetune(tiny_factory("bert"), tmp_path / "o", "--max-steps", "12")
    assert result.exit_code == 4 and "free disk space" in result.output  # type: ignore[attr-defined]
    partial = tmp_path / ".o.partial"
    assert (partial / "checkpoint").exists() and not list(partial.glob(".checkpoint.tmp"))


def test_finetune_token_classification_and_regression(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    data = tmp_path / "ner.tsv"
    data.write_text("tokens\tner_tags\n" + "w1 w2 w3\tB-PER I-PER O\n" * 20 + "w4 w5\tB-LOC O\n" * 20)
    out = tmp_path / "ner"
    result = cli(
        [
            "finetune",
            str(tiny_factory("bert")),
            "-o",
            str(out),
            "--task",
            "token-classification",
            "--data",
            str(data),
            "--eval",
            str(data),
            "--label-column",
            "ner_tags",
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--eval-every",
            "4",
            "--save-every",
            "4",
        ]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["B-LOC", "B-PER", "I-PER", "O"]
    exported = cli(["export", str(out), "--task", "token-classification", "-o", str(tmp_path / "onnx")])
    assert exported.exit_code == 0, exported.output
    scores = tmp_path / "sts.tsv"
    scores.write_text("sentence\tlabel\n" + "".join(f"w{i} w{i + 1}\t{i % 5}.5\n" for i in range(40)))
    result = cli(
        [
            "finetune",
            str(tiny_factory("bert")),
            "-o",
            str(tmp_path / "reg"),
            "--task",
            "regression",
            "--data",
            str(scores),
            "--eval",
            str(scores),
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--eval-every",
            "4",
            "--save-every",
            "4",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "pearson" in json.loads((tmp_path / "reg" / "edgeslim-train.json").read_text())["best"]


def test_recipe_chains_finetune_distill_export(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    common = (
        "    train_size: 64\n    eval_size: 32\n    batch_size: 16\n    max_steps: 2\n    eval_every: 2\n"
    )
    recipe.write_text(
        f"name: chain\nmodel: {tiny_factory('bert')}\noutput: {tmp_path / 'out'}\nsteps:\n"
        "  - type: finetune\n"
        + common
        + "  - type: distill\n    student_layers: 1\n"
        + common
        + "  - type: export\n    task: sequence-classification\n"
    )
    result = cli(["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 1
    again = cli(["run", str(recipe)])
    assert again.exit_code == 0 and again.output.count("reused (cached") == 3, again.output
