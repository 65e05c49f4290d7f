"""What a recipe step's result depends on, hashed: the contents of every file and folder its
config names, edgeslim's own source, library versions, any execution provider other than the
CPU's that it names (an absent one fails the plan) and, for steps that measure or pick
defaults from the CPU, the host.

The recipe cache keys each step on these digests, so a rerun reuses a step only when nothing it
read has changed (a tightened budgets file, an edited data file, a retrained teacher, a code
change, another CPU all re-run it). Written by hand: no library hashes a pydantic config's
referenced files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from edgeslim.artifacts import feed

# Text files whose string values may name further inputs (a budgets file names its baseline,
# reference artifact and data), resolved against the file's own folder.
NESTED = (".yaml", ".yml", ".json")
SKIP_DIRS = frozenset({"__pycache__", ".git", ".edgeslim-cache"})


def sha256_tree(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative names and bytes (links not followed)."""
    digest = hashlib.sha256()
    if path.is_file():
        feed(digest, path)
        return digest.hexdigest()
    for item in sorted(_walk(path)):
        digest.update(str(item.relative_to(path)).encode() + b"\0")
        if item.is_symlink():
            digest.update(b"->" + str(item.readlink()).encode())
        else:
            feed(digest, item)
    return digest.hexdigest()


def _walk(root: Path) -> Iterator[Path]:
    for item in root.iterdir():
        if item.is_dir() and not item.is_symlink():
            if item.name not in SKIP_DIRS:
                yield from _walk(item)
        elif not item.name.startswith(".") or item.is_symlink():
            yield item


@cache
def code_digest() -> str:
    """sha256 over edgeslim's own Python source: any code change invalidates cached steps."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def host() -> dict[str, Any]:
    """The facts a measuring step's result depends on: CPU model, flags, cores, machine."""
    from edgeslim.environment import cpu_info

    return cpu_info()


def environment() -> dict[str, Any]:
    """Library versions (torch, onnxruntime, ... and edgeslim's code digest)."""
    from edgeslim.environment import versions

    return {**versions(), "edgeslim_code": code_digest()}


def inputs(config: Any, data_dir: Path | None = None) -> dict[str, str]:
    """{name: sha256} for every file, folder and built-in dataset a step config names.

    Path fields are hashed (file or folder); string fields only when they name a built-in
    dataset or an existing file (a data spec); nested configs and lists are walked. A named
    YAML/JSON file is also read for the paths it names, relative to its own folder (a budgets
    file's baseline, reference artifact and data).
    """
    found: dict[str, str] = {}
    for value in _leaves(config):
        if isinstance(value, Path):
            _add_path(value, found, data_dir)
        elif isinstance(value, str):
            _add_spec(value, found, data_dir, Path.cwd())
    _add_providers(config, found)
    return found


def _add_providers(values: Any, found: dict[str, str]) -> None:
    """Every execution provider other than the CPU's that `values` names (an `ep` field or key:
    bench, a latency budget), keyed `provider:NAME` on its facts. An absent provider raises its
    loud error here, so a recipe that needs a GPU fails before its first step (exit 7), never
    after minutes of work and never by running on the CPU instead."""
    import json

    from pydantic import BaseModel

    from edgeslim import providers

    if isinstance(values, BaseModel):
        values = {name: getattr(values, name) for name in type(values).model_fields}
    if isinstance(values, dict):
        ep = values.get("ep")
        if isinstance(ep, str) and ep != "cpu" and f"provider:{ep}" not in found:
            facts = json.dumps(providers.facts(ep), sort_keys=True)
            found[f"provider:{ep}"] = hashlib.sha256(facts.encode()).hexdigest()
        values = list(values.values())
    if isinstance(values, list | tuple):
        for item in values:
            _add_providers(item, found)


def _leaves(value: Any) -> Iterator[Any]:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name != "data_dir":  # a folder of datasets: the ones used are hashed by name
                yield from _leaves(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _add_path(path: Path, found: dict[str, str], data_dir: Path | None) -> None:
    key = str(path)
    if key in found or not path.exists():
        return  # the step itself reports a missing path
    found[key] = sha256_tree(path)
    if path.is_file() and path.suffix.lower() in NESTED:
        parsed = _parse(path)
        for text in _strings(parsed):
            _add_spec(text, found, data_dir, path.parent, nested=True)
        _add_providers(parsed, found)  # a budgets file's latency budget on a GPU provider


def _add_spec(
    text: str, found: dict[str, str], data_dir: Path | None, base: Path, nested: bool = False
) -> None:
    """A data spec (built-in name or file); in a nested file also a folder (a reference artifact)."""
    from edgeslim import data

    if text in data.BUILTIN:
        for folder in data.data_dirs(data_dir, text):
            if (folder / data.BUILTIN[text].file).is_file():
                found.setdefault(text, sha256_tree(folder / data.BUILTIN[text].file))
                return
        return
    if not text or len(text) > 4096 or "\n" in text or "\0" in text:
        return
    path = Path(text) if Path(text).is_absolute() else base / text
    try:
        wanted = path.is_file() or (nested and path.is_dir() and not _contains(path, base))
    except OSError:
        return
    if wanted:
        _add_path(path, found, data_dir)


def _contains(folder: Path, inner: Path) -> bool:
    """True when `inner` lies inside `folder` (never hash the folder a budgets file sits in)."""
    return inner.resolve().is_relative_to(folder.resolve())


def _strings(values: Any) -> Iterator[str]:
    if isinstance(values, dict):
        for value in values.values():
            yield from _strings(value)
    elif isinstance(values, list):
        for value in values:
            yield from _strings(value)
    elif isinstance(values, str):
        yield values


def _parse(path: Path) -> Any:
    """The data in a YAML/JSON file, or None when it cannot be read (the step reports that)."""
    import json

    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
