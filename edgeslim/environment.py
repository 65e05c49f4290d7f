"""What machine and libraries an artifact was made with (versions and CPU flags), and `hidden`,
which keeps an installed library from being imported only because it is installed.

Reads package metadata and /proc/cpuinfo only, so it never imports torch or onnxruntime.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "edgeslim",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnx-ir",
    "onnxscript",
    "tokenizers",
    "numpy",
    "safetensors",
    "accelerate",
)
# Flags that decide which int8/bf16 kernels are fast (x86: VNNI/AMX; Arm: dot product, i8mm).
INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "f16c",
    "asimd",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages edgeslim cares about (absent ones left out)."""
    found: dict[str, str] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """CPU model, core count and the instruction-set flags that matter for inference."""
    import os

    model, flags = platform.processor() or platform.machine(), set[str]()
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and model in ("", platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "flags": sorted(f for f in INTERESTING_FLAGS if f in flags),
    }


def snapshot() -> dict[str, object]:
    """Versions and CPU, recorded in every manifest step."""
    return {"versions": versions(), "cpu": cpu_info()}


@contextlib.contextmanager
def hidden(name: str) -> Iterator[None]:
    """Make the not-yet-imported package `name` look absent while a block imports a library
    that would import it only because it is installed (find_spec() is None, an import fails);
    it is put back afterwards. A no-op when `name` is already imported.

    Used for transformers' scikit-learn (models.import_transformers) and onnxruntime.tools'
    torch (quantization.preprocess): its __init__ imports its PyTorch export helpers, and so
    torch, whenever torch is installed (microsoft/onnxruntime#10858), ~1.5 s of a quantize.
    """
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
