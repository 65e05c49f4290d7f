"""onnxruntime CPU sessions for checks and evaluation, made by providers.session (the one
factory; bench times through it too)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import InputError, MissingDependency

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime


def session(model: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """A CPU InferenceSession; InputError when the file is not a loadable ONNX model."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise MissingDependency("onnxruntime is not installed: pip install 'edgeslim[runtime]'") from None
    from edgeslim import providers

    try:
        return providers.session(model, threads=threads)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first = str(exc).strip().splitlines()[0][:300]
        raise InputError(f"{model} cannot be loaded by onnxruntime ({first}): re-export it") from None


def run(sess: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run with only the inputs the graph declares; outputs by name."""
    names = {i.name for i in sess.get_inputs()}
    outputs = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    return {o.name: value for o, value in zip(sess.get_outputs(), outputs, strict=True)}
