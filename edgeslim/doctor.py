"""doctor: versions, CPU flags, execution providers, and warnings on known-bad combinations."""

from __future__ import annotations

import os
from typing import Any

from edgeslim.environment import cpu_info, versions


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split("+")[0].split(".") + ["0", "0"])[:2]
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def providers() -> list[str]:
    """Execution providers the installed onnxruntime offers (empty when it is absent)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def warnings_for(vers: dict[str, str], cpu: dict[str, Any], eps: list[str]) -> list[str]:
    """Known-bad or slow combinations, each with what to do."""
    found = []
    flags = set(cpu.get("flags", []))
    if "onnxruntime" in vers and "onnxruntime-gpu" in vers:
        found.append(
            "onnxruntime and onnxruntime-gpu are both installed and shadow each other: "
            "uninstall both, then install one"
        )
    if "optimum-onnx" in vers and "transformers" in vers and _major_minor(vers["transformers"]) >= (4, 58):
        found.append("optimum-onnx 0.1 refuses transformers >= 4.58: pip install 'transformers<4.58'")
    if "onnxruntime" in vers and "onnx-ir" not in vers:
        found.append("onnxruntime's quantizer needs onnx-ir: pip install onnx-ir")
    if cpu.get("machine") in ("x86_64", "AMD64") and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        found.append(
            "no VNNI/AMX: int8 MatMul runs on AVX2 (u8 x s8 with 16-bit accumulation); "
            "expect modest int8 speedups, keep activations u8 (s8 x s8 is ~6x slower here)"
        )
    if cpu.get("machine") in ("x86_64", "AMD64") and not flags & {"avx512_bf16", "amx_bf16"}:
        found.append("no bf16 hardware: bf16 training/inference is emulated and far slower than fp32")
    if cpu.get("machine") in ("aarch64", "arm64") and "asimddp" not in flags:
        found.append("no Arm dot-product instructions: int8 gains will be small")
    if "torch" in vers and "+cu" in vers["torch"] and "CUDAExecutionProvider" not in eps:
        found.append(
            "a CUDA build of torch is installed on a CPU-only runtime: "
            "pip install torch==2.13.0 (CPU wheel) saves several GB"
        )
    if os.environ.get("OPENBLAS_CORETYPE"):
        found.append("OPENBLAS_CORETYPE is set: numpy may use a slower kernel than this CPU allows")
    return found


def report() -> dict[str, Any]:
    """Everything doctor prints."""
    vers, cpu, eps = versions(), cpu_info(), providers()
    return {
        "versions": vers,
        "cpu": cpu,
        "execution_providers": eps,
        "warnings": warnings_for(vers, cpu, eps),
    }
