"""Resume without pickle: what a checkpoint holds, what a tampered one does, and prune/simplify
recovery resuming after SIGKILL (EDGESLIM_FAULT_KILL_AT_STEP kills right after a checkpoint)."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli

import edgeslim

RUN = "import sys; from edgeslim.cli import main; sys.argv = ['edgeslim'] + sys.argv[1:]; main()"
TRAIN = ["--train-size", "64", "--eval-size", "32", "--batch-size", "16", "--eval-every", "4"]
TRAIN += ["--save-every", "4", "--max-steps", "8"]


def _edgeslim(args: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGESLIM_FAULT_KILL_AT_STEP"}
    if kill_at is not None:
        env["EDGESLIM_FAULT_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run([sys.executable, "-c", RUN, *args], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def killed(
    tiny_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path]:
    """(finetune arguments without -o, the .partial folder of a run killed after step 4's checkpoint)."""
    args = ["finetune", str(tiny_factory("bert")), *TRAIN]
    out = tmp_path_factory.mktemp("killed") / "o"
    result = _edgeslim([*args, "-o", str(out)], kill_at=4)
    assert result.returncode == -9, result.stderr
    partial = out.with_name(".o.partial")
    assert (partial / "checkpoint").is_dir() and not out.exists()
    return args, partial


def _copy(killed: tuple[list[str], Path], tmp_path: Path) -> tuple[list[str], Path]:
    """A private copy of the killed run: (arguments with -o, its checkpoint folder)."""
    args, partial = killed
    shutil.copytree(partial, tmp_path / ".o.partial")
    return [*args, "-o", str(tmp_path / "o")], tmp_path / ".o.partial" / "checkpoint"


def test_checkpoint_is_json_and_safetensors_only(killed: tuple[list[str], Path]) -> None:
    import torch
    from safetensors.torch import load_file

    checkpoint = killed[1] / "checkpoint"
    names = {p.name for p in checkpoint.iterdir()}
    assert names == {"state.json", "model.safetensors", "extra.safetensors", "optimizer.safetensors"}
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["loop"]["step"] == 4 and len(state["loop"]["losses"]) == 4
    assert len(state["fingerprint"]) == 64 and state["scheduler"]["last_epoch"] == 4
    assert len(state["rng"]["python"][1]) == 625 and len(state["rng"]["numpy"][1]) == 624
    assert load_file(checkpoint / "extra.safetensors")["rng.torch"].dtype == torch.uint8
    assert any(
        k.endswith("embeddings.word_embeddings.weight") for k in load_file(checkpoint / "model.safetensors")
    )
    pickles = [p for p in killed[1].rglob("*") if p.suffix in (".pt", ".bin", ".pth", ".pkl")]
    assert pickles == []  # nothing in the work folder needs an unpickler
    moments = load_file(checkpoint / "optimizer.safetensors")
    assert any(k.endswith(".exp_avg") for k in moments) and any(k.endswith(".exp_avg_sq") for k in moments)
    groups = state["optimizer"]["param_groups"]
    assert groups and all(isinstance(g["params"], list) and "lr" in g for g in groups)


class _Marker:
    """Unpickling this creates a file: proof that the pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_pickle_in_place_of_the_optimizer_state_is_not_executed(
    killed: tuple[list[str], Path], tmp_path: Path
) -> None:
    """The optimizer state is read as safetensors: a pickle put there is damage, never run."""
    import pickle

    args, checkpoint = _copy(killed, tmp_path)
    marker = tmp_path / "pwned"
    (checkpoint / "optimizer.safetensors").write_bytes(pickle.dumps({"state": _Marker(marker)}, protocol=2))
    (checkpoint / "optimizer.pt").write_bytes(pickle.dumps({"state": _Marker(marker)}, protocol=2))
    result = cli(args)
    assert result.exit_code == 3, result.output
    assert str(checkpoint) in result.output and "delete it" in result.output
    assert not marker.exists()


def test_old_pickle_checkpoint_file_is_refused_unread(killed: tuple[list[str], Path], tmp_path: Path) -> None:
    import pickle

    args, checkpoint = _copy(killed, tmp_path)
    shutil.rmtree(checkpoint)
    marker = tmp_path / "pwned"
    checkpoint.write_bytes(pickle.dumps(_Marker(marker), protocol=2))  # the old format: one pickle
    result = cli(args)
    assert result.exit_code == 3 and "older edgeslim" in result.output, result.output
    assert str(checkpoint) in result.output and not marker.exists()


def test_foreign_fingerprint_refused_before_any_tensor_is_read(
    killed: tuple[list[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch
    import torch

    args, checkpoint = _copy(killed, tmp_path)
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps({**state, "fingerprint": "0" * 64}))
    (checkpoint / "model.safetensors").write_bytes(b"garbage")  # would be 'damaged' if read first

    def no_read(*a: object, **k: object) -> None:
        raise AssertionError("a tensor file was opened before the fingerprint was checked")

    for module, name in (
        (safetensors.torch, "load_file"),
        (safetensors.torch, "load_model"),
        (torch, "load"),
    ):
        monkeypatch.setattr(module, name, no_read)
    result = cli(args)
    assert result.exit_code == 3, result.output
    assert "different run" in result.output and f"delete {checkpoint}" in result.output


@pytest.mark.parametrize(
    "damage",
    ["bad-json", "not-an-object", "truncated-weights", "missing-extra", "wrong-shape", "bad-loop"],
)
def test_damaged_checkpoint_is_exit_3_naming_the_folder(
    killed: tuple[list[str], Path], tmp_path: Path, damage: str
) -> None:
    args, checkpoint = _copy(killed, tmp_path)
    state_file, weights = checkpoint / "state.json", checkpoint / "model.safetensors"
    state = json.loads(state_file.read_text())
    if damage == "bad-json":
        state_file.write_text(state_file.read_text()[:40])
    elif damage == "not-an-object":
        state_file.write_text("[1, 2]")
    elif damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "missing-extra":
        (checkpoint / "extra.safetensors").unlink()
    elif damage == "wrong-shape":  # weights of another model under the same names
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        save_file({k: v[..., :1].contiguous() if v.ndim else v for k, v in tensors.items()}, weights)
    else:
        state_file.write_text(json.dumps({**state, "loop": {**state["loop"], "step": "four"}}))
    result = cli(args)
    assert result.exit_code == 3, result.output
    assert str(checkpoint) in result.output and "delete" in result.output
    assert not (tmp_path / "o").exists()


def _tsv(path: Path, rows: int) -> Path:
    """The first `rows` SST-2 training sentences (small: recovery in seconds)."""
    source = Path(edgeslim.__file__).parent / "datasets" / "sst2" / "glue_train.tsv"
    path.write_text("".join(source.read_text().splitlines(keepends=True)[: rows + 1]))
    return path


def _losses(directory: Path) -> list[float]:
    return list(json.loads((directory / "edgeslim-train.json").read_text())["losses"])


@pytest.mark.parametrize(
    ("command", "change"),
    [("prune", ["--ffn", "0.5"]), ("simplify", ["--share-layers", "2"])],
)
def test_recovery_resumes_after_kill(
    tiny_factory: Callable[..., Path], tmp_path: Path, command: str, change: list[str]
) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    data = _tsv(tmp_path / "train.tsv", 64)
    args = [command, str(teacher), *change, "--recover-with", str(teacher), "--recover-steps", "8"]
    args += ["--data", str(data), "--eval", str(data), "--max-length", "32"]
    whole = _edgeslim([*args, "-o", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "r"
    killed = _edgeslim([*args, "-o", str(out)], kill_at=4)  # recovery checkpoints every 2 steps
    assert killed.returncode == -9, killed.stderr
    checkpoint = tmp_path / ".r.partial" / "recovery" / "checkpoint"
    assert json.loads((checkpoint / "state.json").read_text())["loop"]["step"] == 4
    again = _edgeslim([*args, "-o", str(out)])
    assert again.returncode == 0, again.stderr
    assert "resuming from step 4" in again.stderr
    assert not (tmp_path / ".r.partial").exists() and (out / f"edgeslim-{command}.json").exists()
    assert not (out / "checkpoint").exists() and not (out / "recovery").exists()
    a, b = _losses(tmp_path / "whole"), _losses(out)
    assert len(a) == len(b) == 8 and b[4:] == pytest.approx(a[4:], abs=1e-6)


def test_recovery_of_another_prune_is_not_resumed(tiny_factory: Callable[..., Path], tmp_path: Path) -> None:
    teacher = tiny_factory("bert", "seq", 2)
    data = _tsv(tmp_path / "train.tsv", 64)
    common = [
        "--recover-with",
        str(teacher),
        "--recover-steps",
        "8",
        "--data",
        str(data),
        "--eval",
        str(data),
    ]
    out = ["-o", str(tmp_path / "r")]
    killed = _edgeslim(["prune", str(teacher), "--ffn", "0.5", *common, *out], kill_at=4)
    assert killed.returncode == -9, killed.stderr
    other = _edgeslim(["prune", str(teacher), "--ffn", "0.25", *common, *out])  # same output, other prune
    assert other.returncode == 3, other.stderr
    assert "different run" in other.stderr and str(tmp_path / ".r.partial" / "recovery") in other.stderr


def test_prune_without_recovery_leaves_no_partial_folder(
    tiny_factory: Callable[..., Path], tmp_path: Path
) -> None:
    result = cli(["prune", str(tiny_factory("bert", "seq", 2)), "-o", str(tmp_path / "p")])
    assert result.exit_code == 3 and "nothing to prune" in result.output
    assert list(tmp_path.iterdir()) == []
