"""Latency measurement on onnxruntime sessions: several models measured interleaved
(A, B, A, B, ...) so machine noise hits them alike; spinning threads off so one session's
idle spinning does not slow the next (shared/MEASURED.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]


def session(model: Path, threads: int) -> Any:
    """A CPU session with `threads` intra-op threads and spinning disabled."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def interleaved(models: dict[str, Path], feeds: Feeds, threads: int, runs: int, warmup: int = 5
                ) -> dict[str, np.ndarray]:
    """Per model, `runs` latencies in ms, measured round-robin after `warmup` runs each."""
    sessions = {name: session(path, threads) for name, path in models.items()}
    inputs = {name: {i.name: feeds[i.name] for i in s.get_inputs()} for name, s in sessions.items()}
    for name, sess in sessions.items():
        for _ in range(warmup):
            sess.run(None, inputs[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, inputs[name])
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(t) for name, t in times.items()}


def ratio_ci(a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median(a) / median(b) with a 95% bootstrap interval."""
    rng = np.random.default_rng(seed)
    ratios = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(samples)]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(low), float(high)
