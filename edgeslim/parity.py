"""Prove an ONNX graph computes what PyTorch computes, at shapes tracing never saw.

Export records golden inputs and PyTorch outputs in reference.npz (nanoGPT/llm.c style);
every later step checks its graph against that file, so "parity after optimize" is still
parity with PyTorch, not with the previous ONNX file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.errors import ParityError

Feeds = dict[str, np.ndarray]


def make_inputs(
    input_names: list[str], vocab_size: int, pad_id: int, max_len: int, seed: int = 0
) -> list[Feeds]:
    """Cases: batch 3 x seq 17 with padding in the batch, and batch 1 x the max length."""
    rng = np.random.default_rng(seed)
    cases = []
    for batch, seq, lengths in ((3, 17, (17, 11, 4)), (1, max_len, (max_len,))):
        low = min(5, vocab_size - 1)
        ids = rng.integers(low, vocab_size, size=(batch, seq), dtype=np.int64)  # (B, T)
        mask = np.zeros((batch, seq), dtype=np.int64)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        ids[mask == 0] = pad_id
        types = np.zeros((batch, seq), dtype=np.int64)
        types[:, seq // 2 :] = 1  # a sentence-pair layout
        types[mask == 0] = 0
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        cases.append({k: v for k, v in feeds.items() if k in input_names})
    return cases


def save_reference(path: Path, cases: list[Feeds], outputs: list[dict[str, np.ndarray]]) -> None:
    """Store cases and their PyTorch outputs as `case{i}/in/{name}` and `case{i}/out/{name}`."""
    arrays = {}
    for i, (feeds, outs) in enumerate(zip(cases, outputs, strict=True)):
        arrays.update({f"case{i}/in/{k}": v for k, v in feeds.items()})
        arrays.update({f"case{i}/out/{k}": v for k, v in outs.items()})
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)


def load_reference(path: Path) -> tuple[list[Feeds], list[dict[str, np.ndarray]]]:
    """Read back what save_reference wrote."""
    import zipfile

    from edgeslim.errors import InputError

    cases: dict[int, Feeds] = {}
    outs: dict[int, dict[str, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                case, kind, name = key.split("/")
                index = int(case.removeprefix("case"))
                (cases if kind == "in" else outs).setdefault(index, {})[name] = data[key]
        order = sorted(cases)
        return [cases[i] for i in order], [outs[i] for i in order]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"{path} is not a valid reference file ({type(exc).__name__}): re-export the artifact"
        ) from None


def compare(
    expected: list[dict[str, np.ndarray]],
    actual: list[dict[str, Any]],
    cases: list[Feeds],
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    """Per case and output: max abs/rel diff; every mismatch collected, then one ParityError."""
    report: dict[str, Any] = {"atol": atol, "rtol": rtol, "cases": []}
    mismatches = []
    for feeds, want, got in zip(cases, expected, actual, strict=True):
        shape = "x".join(str(d) for d in feeds["input_ids"].shape)
        per_output = {}
        for name, ref in want.items():
            if name not in got:
                mismatches.append(f"{shape}: output '{name}' missing from the ONNX graph")
                continue
            out = np.asarray(got[name], dtype=np.float64)
            ref64 = ref.astype(np.float64)
            if out.shape != ref.shape:
                mismatches.append(f"{shape}: '{name}' shape {out.shape} != PyTorch {ref.shape}")
                continue
            diff = np.abs(out - ref64)
            max_abs = float(diff.max()) if diff.size else 0.0
            max_rel = float((diff / (np.abs(ref64) + 1e-6)).max()) if diff.size else 0.0
            per_output[name] = {"max_abs_diff": max_abs, "max_rel_diff": max_rel}
            if not np.all(diff <= atol + rtol * np.abs(ref64)) or not np.isfinite(out).all():
                mismatches.append(f"{shape}: '{name}' max abs diff {max_abs:.3g} (atol {atol:g})")
        report["cases"].append({"shape": shape, "outputs": per_output})
    report["max_abs_diff"] = max(
        (o["max_abs_diff"] for c in report["cases"] for o in c["outputs"].values()), default=0.0
    )
    if mismatches:
        raise ParityError(
            "ONNX Runtime differs from PyTorch: "
            + "; ".join(mismatches)
            + ". Re-export with another --opset or exporter, or loosen --atol if expected"
        )
    return report


def check_artifact(model: Path, reference: Path, atol: float, rtol: float) -> dict[str, Any]:
    """Run `model` on the golden inputs in `reference` and compare with PyTorch's outputs."""
    from edgeslim import sessions

    cases, expected = load_reference(reference)
    sess = sessions.session(model)
    actual = [sessions.run(sess, feeds) for feeds in cases]
    return compare(expected, actual, cases, atol, rtol)
