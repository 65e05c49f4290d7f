"""Verify an artifact before trusting it: hashes, external data, symlinks, files, loading.

`verify(target)` collects every problem instead of stopping at the first, so one run tells
a user all that is wrong. Checks, for an artifact directory:

    manifest    edgeslim.json is a JSON object with the expected schema
    hashes      each file the manifest lists under "files" ({name: sha256}) is unchanged
                (older artifacts list none: a warning, not a failure)
    references  model.onnx, config.json (a JSON object), the manifest's tokenizer files and
                step reports exist inside the directory
    symlinks    no symlink inside the directory points outside it (or nowhere)
    external    every external-data location of every tensor stays inside the directory,
                exists, and is long enough for its offset + length
    load        onnxruntime builds a CPU session (skipped when external data is unsafe,
                so a location outside the directory is never read)

A bare .onnx file gets the external-data and load checks, relative to its folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeslim import artifacts, inspection
from edgeslim.errors import InputError, OutputError

HASHES = artifacts.FILES  # manifest key holding {relative file name: sha256}, see artifacts.seal
CONFIG = "config.json"


@dataclass
class Result:
    """What verification found; `problems` fail it, `warnings` do not."""

    target: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: the verdict with counts."""
        if self.ok:
            return f"{self.target}: verified ({', '.join(self.checks)}); {len(self.warnings)} warning(s)"
        return (
            f"{self.target} failed verification: {len(self.problems)} problem(s); "
            "re-create the artifact (or restore its files) and run 'edgeslim verify' again"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "artifact": str(self.target),
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "checks": self.checks,
        }


class ArtifactInvalid(InputError):
    """An artifact failed verification; the message lists every problem on one line."""

    def __init__(self, result: Result) -> None:
        self.result = result
        super().__init__(
            f"{result.target} failed verification ({len(result.problems)} problem(s)): "
            + "; ".join(result.problems)
            + f" (details: edgeslim verify {result.target})"
        )


def _read_manifest(directory: Path, result: Result) -> dict[str, Any]:
    """The manifest, or {} with a problem recorded; never raises for a bad file."""
    path = directory / artifacts.MANIFEST
    result.checks.append("manifest")
    if not path.is_file():
        result.problems.append(f"{artifacts.MANIFEST}: missing (not an edgeslim artifact)")
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.problems.append(f"{artifacts.MANIFEST}: not valid JSON ({type(exc).__name__})")
        return {}
    if not isinstance(manifest, dict):
        result.problems.append(f"{artifacts.MANIFEST}: a JSON {type(manifest).__name__}, expected an object")
        return {}
    if manifest.get("schema") != artifacts.SCHEMA:
        result.problems.append(
            f"{artifacts.MANIFEST}: schema {manifest.get('schema')!r}, expected {artifacts.SCHEMA!r}"
        )
    return manifest


def _check_hashes(directory: Path, manifest: dict[str, Any], result: Result) -> None:
    recorded = manifest.get(HASHES)
    if recorded is None:
        result.warnings.append("no file hashes in the manifest (older artifact): contents not checked")
        return
    result.checks.append("hashes")
    if not isinstance(recorded, dict):
        result.problems.append(f"{artifacts.MANIFEST}: '{HASHES}' is not a mapping of name to sha256")
        return
    for name, entry in recorded.items():
        expected = entry.get("sha256") if isinstance(entry, dict) else entry
        path = directory / str(name)
        if not artifacts.inside(path, directory):
            result.problems.append(f"{name}: listed in the manifest but outside the artifact")
        elif not path.is_file():
            result.problems.append(f"{name}: listed in the manifest but missing")
        elif artifacts.sha256(path) != expected:
            result.problems.append(f"{name}: sha256 differs from the manifest (changed or corrupt)")


def _check_file(directory: Path, name: str, why: str, result: Result) -> bool:
    path = directory / name
    if not artifacts.inside(path, directory):
        result.problems.append(f"{name}: {why} points outside the artifact")
        return False
    if not path.is_file():
        result.problems.append(f"{name}: {why} is missing")
        return False
    return True


def _check_references(directory: Path, manifest: dict[str, Any], result: Result) -> None:
    """model.onnx, config.json, tokenizer files and step reports named by the manifest exist."""
    result.checks.append("references")
    _check_file(directory, artifacts.MODEL, "the model", result)
    if _check_file(directory, CONFIG, "the model config", result):
        try:
            config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            config, detail = None, f"not valid JSON ({type(exc).__name__})"
        else:
            detail = f"a JSON {type(config).__name__}, expected an object"
        if not isinstance(config, dict):
            result.problems.append(f"{CONFIG}: {detail}")
    tokenizer = manifest.get("tokenizer_files") or []
    if not isinstance(tokenizer, list):
        result.problems.append(f"{artifacts.MANIFEST}: 'tokenizer_files' is not a list")
        tokenizer = []
    for name in tokenizer:
        _check_file(directory, str(name), "a tokenizer file named by the manifest", result)
    steps = manifest.get("steps") or []
    for step in steps if isinstance(steps, list) else []:
        report = step.get("report") if isinstance(step, dict) else None
        if isinstance(report, str):
            _check_file(directory, report, f"the {step.get('type')} step's report", result)


def _check_symlinks(directory: Path, result: Result) -> None:
    result.checks.append("symlinks")
    for root, dirs, files in os.walk(directory):  # never follows links: each is checked instead
        for name in sorted([*dirs, *files]):
            path = Path(root, name)
            if not path.is_symlink():
                continue
            rel = path.relative_to(directory).as_posix()
            target = os.readlink(path)
            try:
                path.resolve(strict=False)
            except (OSError, RuntimeError):
                result.problems.append(f"{rel}: symlink loop (to {target})")
                continue
            if not artifacts.inside(path, directory):
                result.problems.append(
                    f"{rel}: symlink to {target}, outside the artifact (replace it with a copy of the file)"
                )
            elif not path.exists():
                result.problems.append(f"{rel}: broken symlink (to {target})")


def _check_model(model_path: Path, root: Path, result: Result, load: bool) -> None:
    """Parse the graph, check its external data, then build an onnxruntime CPU session."""
    from edgeslim import sessions

    if not model_path.is_file():
        return  # reported as a missing reference
    result.checks.append("external data")
    try:
        model = inspection.load_graph(model_path)
    except InputError as exc:
        result.problems.append(str(exc).replace(str(model_path), model_path.name))
        return
    external = inspection.external_data_problems(model, root)
    result.problems += external
    if not load:
        return
    if external:
        result.warnings.append("onnxruntime load not attempted: fix the external data first")
        return
    result.checks.append("onnxruntime load")
    try:
        sessions.session(model_path, threads=1)
    except InputError as exc:
        result.problems.append(str(exc).replace(str(model_path), model_path.name))


def verify(target: Path, load: bool = True) -> Result:
    """Every problem of an artifact directory (or a bare .onnx file); InputError if absent."""
    if not target.exists():
        raise InputError(f"{target} does not exist: give an artifact directory made by edgeslim")
    result = Result(target)
    if target.is_file():
        _check_model(target, target.parent, result, load)
        return result
    manifest = _read_manifest(target, result)
    _check_references(target, manifest, result)
    _check_symlinks(target, result)
    if manifest:
        _check_hashes(target, manifest, result)
    if artifacts.inside(target / artifacts.MODEL, target):  # else reported; never read outside
        _check_model(target / artifacts.MODEL, target, result, load)
    return result


def require(target: Path, load: bool = True) -> Result:
    """verify(), raising ArtifactInvalid (exit 3) with every problem when any is found."""
    result = verify(target, load)
    if not result.ok:
        raise ArtifactInvalid(result)
    return result


def writable_file(path: Path) -> None:
    """Before any work: make sure a result file can be written at `path`, creating missing
    parent folders (as `-o` does); OutputError (exit 4) when it cannot."""
    if path.is_dir():
        raise OutputError(f"{path} is a directory: give a file name for the output")
    blocker = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent} ({exc.strerror}): choose another path") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"cannot write {path}: {path.parent} is not writable; choose another path")
