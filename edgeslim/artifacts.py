"""The artifact directory: layout, manifest (provenance), atomic writes, hashing.

An artifact directory holds:
    model.onnx (+ model.onnx_data)   the graph, external data when large
    config.json, tokenizer files      what transformers/optimum need to load it
    reference.npz                     golden inputs and PyTorch outputs from export
    edgeslim.json                     the manifest: source hash, every step, versions, metrics
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeslim import locking
from edgeslim.errors import InputError, OutputError

MANIFEST = "edgeslim.json"
MODEL = "model.onnx"
EXTERNAL_DATA = "model.onnx_data"
REFERENCE = "reference.npz"
SCHEMA = "edgeslim.manifest/1"


def sha256_files(paths: list[Path]) -> str:
    """One sha256 over the names and bytes of `paths` (sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode())
        feed(digest, path)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    """sha256 of one file's bytes."""
    digest = hashlib.sha256()
    feed(digest, path)
    return digest.hexdigest()


def feed(digest: Any, path: Path) -> None:
    """Add a file's bytes to a hashlib digest, 1 MiB at a time."""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def model_files(directory: Path) -> list[Path]:
    """The ONNX graph and its external data files in an artifact directory."""
    return sorted(p for p in directory.iterdir() if p.name.startswith(MODEL) and p.is_file())


def artifact_size(directory: Path) -> int:
    """Bytes of the model: model.onnx plus external data."""
    return sum(p.stat().st_size for p in model_files(directory))


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of an artifact directory; InputError when it is not one."""
    if not directory.exists():
        raise InputError(f"{directory} does not exist: give an artifact directory made by edgeslim")
    if not directory.is_dir():
        raise InputError(f"{directory} is a file: give the artifact directory that contains it")
    path = directory / MANIFEST
    if not path.exists():
        raise InputError(
            f"{directory} has no {MANIFEST}: it is not an edgeslim artifact "
            "(create one with 'edgeslim export')"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): re-create the artifact") from None
    if not isinstance(manifest, dict):
        kind = type(manifest).__name__
        raise InputError(f"{path} holds a JSON {kind}, not an object: re-create the artifact")
    if manifest.get("schema") != SCHEMA:
        raise InputError(f"{path} has schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    return manifest


def max_length(manifest: dict[str, Any], default: int = 512) -> int:
    """The longest input the artifact was exported for, as its manifest records (else `default`)."""
    return int(manifest.get("max_length") or default)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def copy_file(src: Path, dst: Path) -> None:
    """Copy one artifact file. Never a hard link: onnx refuses external data with more than one
    link ("potential hardlink attack"), and a file written later through a link would change
    every directory that shares it (cache entries included)."""
    if src.is_symlink():
        raise InputError(
            f"{src} is a symbolic link: artifacts must hold their own files; replace the link "
            "with a copy of the file and rerun"
        )
    shutil.copy2(src, dst)


def copy_companions(src: Path, dst: Path, skip_model: bool = True) -> None:
    """Carry every file of artifact `src` except the model (and manifest) into `dst`."""
    for item in src.iterdir():
        if item.name == MANIFEST or item.name.startswith(".") or (skip_model and item.name.startswith(MODEL)):
            continue
        if item.is_dir() and not item.is_symlink():
            for root, dirs, files in os.walk(item):  # links anywhere inside are refused too
                for name in dirs + files:
                    if (Path(root) / name).is_symlink():
                        copy_file(Path(root) / name, dst)  # raises InputError
            shutil.copytree(item, dst / item.name, copy_function=shutil.copy2)
        else:
            copy_file(item, dst / item.name)


# A directory carrying one of these was written by edgeslim: --force may replace it.
MARKERS = (
    MANIFEST,
    "edgeslim-recipe.json",
    "edgeslim-train.json",
    "edgeslim-prune.json",
    "edgeslim-simplify.json",
    "edgeslim-shapes.json",
    ".step-summary.json",
)


def made_by_edgeslim(directory: Path) -> bool:
    """True for an edgeslim output (manifest or record inside, or an edgeslim report)."""
    if any((directory / name).is_file() for name in MARKERS):
        return True
    report = directory / "report.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(report.read_text()).get("schema", "")).startswith("edgeslim.report")
    return False


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output without --force, and with it anything edgeslim did not write."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"{out} exists and is not a directory: choose another -o")
    if out.exists() and not force:
        raise OutputError(f"{out} already exists: choose another -o or pass --force to replace it")
    if out.exists() and any(out.iterdir()) and not made_by_edgeslim(out):
        raise OutputError(
            f"{out} exists and was not written by edgeslim (no {MANIFEST} or record inside): "
            "--force replaces only edgeslim outputs; choose another -o or remove it yourself"
        )
    parent = out.parent if out.parent != Path("") else Path(".")
    parent = parent.resolve()
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise OutputError(f"cannot write to {parent}: choose an output path in a writable directory")


def sweep(out: Path) -> None:
    """Remove temporaries of `out` left by killed runs (call while holding `out`'s lock)."""
    for item in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if item.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-")):
            shutil.rmtree(item, ignore_errors=True)


@contextlib.contextmanager
def staging(out: Path, force: bool, resumable: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; rename it to `out` only on success.

    The output is locked for the duration (a second run exits 4 naming this one's pid), and
    temporaries left by killed runs are swept first. On any error (SIGTERM included: the CLI
    turns it into an exception) the temporary directory is removed, so nothing half-written
    remains; a `resumable` step (training) instead keeps its `.NAME.partial` directory, holding
    its checkpoint, so that rerunning the same command resumes.
    """
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    with locking.hold(out) if main else contextlib.nullcontext():
        if main:
            check_output(out, force)  # again under the lock: another run may have just finished
            sweep(out)
        yield from _stage(out, resumable, main)


def _stage(out: Path, resumable: bool, main: bool) -> Iterator[Path]:
    if resumable:
        tmp = out.with_name(f".{out.name}.partial")
        tmp.mkdir(exist_ok=True)
    else:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{int(time.time() * 1000)}")
        tmp.mkdir()
    try:
        yield tmp
        if not main:
            return
        seal(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists() and not resumable and main:
            shutil.rmtree(tmp, ignore_errors=True)
        elif resumable and main and tmp.is_dir() and not any(tmp.iterdir()):
            tmp.rmdir()  # failed before its first checkpoint (e.g. bad data): nothing to resume


FILES = "files"  # manifest key: {relative file name: sha256}, checked by `edgeslim verify`


def file_hashes(directory: Path) -> dict[str, str]:
    """{relative posix name: sha256} of every regular file under `directory` except the
    manifest, hidden names (temporaries, locks, step summaries) and links."""
    hashes = {}
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not Path(root, d).is_symlink())
        for name in sorted(names):
            path = Path(root, name)
            relative = path.relative_to(directory).as_posix()
            if not (name.startswith(".") or relative == MANIFEST or path.is_symlink()):
                hashes[relative] = sha256(path)
    return hashes


def seal(directory: Path) -> None:
    """Record every file's sha256 in the artifact's manifest (no-op for non-artifacts)."""
    if (directory / MANIFEST).is_file():
        manifest = json.loads((directory / MANIFEST).read_text())
        write_json(directory / MANIFEST, {**manifest, FILES: file_hashes(directory)})


@contextlib.contextmanager
def scratch(purpose: str) -> Iterator[Path]:
    """A temporary work folder named after this process (edgeslim-PID-PURPOSE-*), removed on
    exit; folders of processes that no longer exist (killed with SIGKILL) are swept first."""
    import tempfile

    sweep_scratch()
    with tempfile.TemporaryDirectory(prefix=f"edgeslim-{os.getpid()}-{purpose}-") as tmp:
        yield Path(tmp)


def sweep_scratch(root: Path | None = None) -> None:
    """Remove scratch folders whose process is gone."""
    import tempfile

    for item in (root or Path(tempfile.gettempdir())).glob("edgeslim-*-*"):
        pid = item.name.split("-")[1]
        if pid.isdigit() and item.is_dir() and not _alive(int(pid)):
            shutil.rmtree(item, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_main_process() -> bool:
    """False on the non-zero ranks of `torchrun` / `accelerate launch` (they write nothing final)."""
    return os.environ.get("RANK", "0") == "0"


def new_manifest(task: str, source: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A fresh manifest for an artifact made from `source` ({path, sha256})."""
    from edgeslim import __version__

    return {
        "schema": SCHEMA,
        "edgeslim_version": __version__,
        "task": task,
        "source": source,
        **fields,
        "steps": [],
        "metrics": {},
    }


def append_step(manifest: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` with `step` (plus environment snapshot) appended."""
    from edgeslim.environment import snapshot

    record = {**step, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **snapshot()}
    return {**manifest, "steps": [*manifest.get("steps", []), record]}


def inside(path: Path, root: Path) -> bool:
    """True when `path`, with symlinks and '..' resolved, lies within `root` (False for a loop)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return False


class Phases:
    """Wall seconds per named phase of a step (`with phases("export"): ...`; a phase run twice
    adds up), recorded in the manifest as `phases_s` (tools/bench_export.py reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + spent, 3)
