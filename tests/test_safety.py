"""Safe writes: no hard links, one writer per output, SIGTERM cleans up, --force only replaces
edgeslim outputs, temporaries of killed runs are swept, links out of an artifact are refused."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli, leftovers, lock_held_elsewhere

RUN = "import sys; from edgeslim.cli import main; sys.argv = ['edgeslim'] + sys.argv[1:]; main()"


def test_recipe_outputs_share_no_hard_links_and_reoptimize_with_external_data(
    tiny_bert: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "out"
    recipe.write_text(
        f"name: ext\nmodel: {tiny_bert}\noutput: {out}\nsteps:\n  - type: export\n    external_data: true\n"
    )
    assert (result := cli(["run", str(recipe)])).exit_code == 0, result.output
    assert (out / "model.onnx_data").exists()
    every = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert every and all(p.stat().st_nlink == 1 for p in every)
    # onnx refuses external data with several links; a copy can be optimized again
    again = cli(["optimize", str(out), "-o", str(tmp_path / "fused")])
    assert again.exit_code == 0, again.output


def test_second_writer_exits_4_naming_the_holder(bert_fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with lock_held_elsewhere(out) as pid:
        result = cli(["optimize", str(bert_fp32), "-o", str(out)])
        assert result.exit_code == 4 and f"pid {pid}" in result.output, result.output
        assert not out.exists()
    assert cli(["optimize", str(bert_fp32), "-o", str(out)]).exit_code == 0  # released at death


def test_sigterm_removes_the_temporary_output(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, "export", str(tiny_bert), "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".o.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert list(tmp_path.glob(".o.tmp-*")), "the export never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err
    assert not out.exists() and leftovers(tmp_path) == [] and not list(tmp_path.glob(".o.lock"))


def test_force_replaces_only_edgeslim_outputs(bert_fp32: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    result = cli(["optimize", str(bert_fp32), "-o", str(foreign), "--force"])
    assert result.exit_code == 4 and "not written by edgeslim" in result.output
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"
    ours = tmp_path / "ours"
    assert cli(["optimize", str(bert_fp32), "-o", str(ours)]).exit_code == 0
    assert cli(["optimize", str(bert_fp32), "-o", str(ours), "--force"]).exit_code == 0


def test_temporaries_of_killed_runs_are_swept(bert_fp32: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".o.tmp-999999-1"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"x" * 1000)
    (tmp_path / ".o.old-999999").mkdir()
    other = tmp_path / ".other.tmp-999999-1"  # another output's temporary is left alone
    other.mkdir()
    assert cli(["optimize", str(bert_fp32), "-o", str(tmp_path / "o")]).exit_code == 0
    assert leftovers(tmp_path) == [other.name]


def test_symlink_out_of_an_artifact_is_refused(bert_fp32: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(bert_fp32, art)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of the artifact")
    os.symlink(outside, art / "extra")
    result = cli(["optimize", str(art), "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "symbolic link" in result.output
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []
    (art / "extra").unlink()
    (art / "nested").mkdir()
    os.symlink(outside / "secret.txt", art / "nested" / "inner")  # deeper down too
    result = cli(["optimize", str(art), "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "symbolic link" in result.output and not (tmp_path / "o").exists()


def test_manifest_records_the_hash_of_every_file(bert_fused: Path) -> None:
    from edgeslim import artifacts

    manifest = artifacts.read_manifest(bert_fused)
    on_disk = {p.relative_to(bert_fused).as_posix() for p in bert_fused.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {artifacts.MANIFEST}
    assert manifest["files"]["model.onnx"] == artifacts.sha256(bert_fused / "model.onnx")


def test_scratch_folders_of_dead_processes_are_swept(tmp_path: Path) -> None:
    from edgeslim import artifacts

    dead = tmp_path / "edgeslim-999999-quantize-abc"  # no such pid (above pid_max defaults)
    dead.mkdir()
    (dead / "preprocessed.onnx").write_bytes(b"x" * 1000)
    mine = tmp_path / f"edgeslim-{os.getpid()}-probe-xyz"
    mine.mkdir()
    artifacts.sweep_scratch(tmp_path)
    assert not dead.exists() and mine.exists()
