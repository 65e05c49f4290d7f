"""Latency, throughput and memory on onnxruntime execution providers.

Several artifacts are measured interleaved (A, B, A, B, ...) so machine noise hits them
alike; intra-op spinning is off so one session's idle spinning does not slow the next
(shared/MEASURED.md); ratios to the first artifact come with bootstrap 95% CIs.
Needs only onnxruntime and numpy (the runtime install).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim import providers
from edgeslim.defaults import BENCH_WARMUP, RATIO_BOOTSTRAP

SCHEMA = "edgeslim.bench/1"
Feeds = dict[str, np.ndarray]


def rss_mb() -> float:
    """Current resident set size of this process (Linux), MB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def session(model: Path, threads: int, ep: str = "CPUExecutionProvider", allow_fallback: bool = False) -> Any:
    """A session for `ep` with `threads` intra-op threads and spinning disabled."""
    from edgeslim.errors import ProviderUnavailable

    try:
        return providers.session(model, ep, threads, timing=True, allow_fallback=allow_fallback)
    except Exception as exc:
        if "fallback to CPU EP has been explicitly disabled" not in str(exc):
            raise
        raise ProviderUnavailable(
            f"{model}: some nodes cannot run on {ep} (e.g. onnxruntime contrib ops from fusion): "
            "bench an unfused or QDQ artifact, or pass --allow-fallback to let those nodes run on CPU "
            "(the placement counts then show how many)"
        ) from None


def interleaved(
    sessions: dict[str, Any], feeds: Feeds, runs: int, warmup: int = BENCH_WARMUP, time_budget_s: float = 0.0
) -> dict[str, np.ndarray]:
    """Per session, latencies in ms, round-robin; stops at `runs` or the time budget (>= 10 runs)."""
    inputs = {name: {i.name: feeds[i.name] for i in s.get_inputs()} for name, s in sessions.items()}
    for name, sess in sessions.items():
        for _ in range(warmup):
            sess.run(None, inputs[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    start = time.perf_counter()
    for index in range(runs):
        if time_budget_s and index >= 10 and time.perf_counter() - start > time_budget_s:
            break
        for name, sess in sessions.items():
            began = time.perf_counter()
            sess.run(None, inputs[name])
            times[name].append((time.perf_counter() - began) * 1e3)
    return {name: np.asarray(t) for name, t in times.items()}


def ratio_ci(
    a: np.ndarray, b: np.ndarray, samples: int = RATIO_BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float]:
    """Median(a) / median(b) with a 95% bootstrap interval.

    Equal run counts are taken as paired: `interleaved` times run i of every model back to back,
    so a load spike hits both and the pair is resampled jointly (a tighter, honest interval; for
    independent samples of equal count it is as valid); unequal counts are resampled apart."""
    from edgeslim.metrics import bootstrap_ci

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.median(x) / np.median(y))

    low, high = bootstrap_ci(ratio, a, b, samples, seed, paired=a.size == b.size)
    return ratio(a, b), low, high


def stats(ms: np.ndarray, batch: int) -> dict[str, float]:
    """Summary of one latency sample (ms)."""
    median = float(np.median(ms))
    return {
        "runs": int(ms.size),
        "median_ms": round(median, 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "stdev_ms": round(float(ms.std(ddof=1)), 3) if ms.size > 1 else 0.0,
        "throughput_seq_s": round(batch / (median / 1e3), 2),
    }


def make_feeds(models: dict[str, Path], batch: int, seq: int, seed: int = 0) -> Feeds:
    """Random token ids valid for every model (smallest vocabulary), full attention mask."""
    vocab = min(_vocab_size(p) for p in models.values())
    ids = np.random.default_rng(seed).integers(min(5, vocab - 1), vocab, size=(batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _vocab_size(model: Path) -> int:
    """vocab_size from the config.json beside `model` (1000 without one); InputError when unreadable."""
    from edgeslim.models import check_sizes, read_json

    path = model.parent / "config.json"
    if not path.exists():
        return 1000
    config = read_json(path)
    check_sizes(config, path)
    return int(config.get("vocab_size", 1000))


def max_length(models: dict[str, Path]) -> int | None:
    """The smallest max_length recorded in the models' manifests (None when none records one)."""
    from edgeslim import artifacts
    from edgeslim.models import read_json

    manifests = [p.parent / artifacts.MANIFEST for p in models.values()]
    known = [artifacts.max_length(read_json(m), 0) for m in manifests if m.exists()]
    return min(filter(None, known), default=None)


def run_grid(
    models: dict[str, Path],
    ep: str,
    threads: list[int],
    batches: list[int],
    seqs: list[int],
    runs: int,
    warmup: int,
    time_budget_s: float,
    allow_fallback: bool = False,
) -> dict[str, Any]:
    """Measure every model over threads x batch x seq; the first model is the ratio baseline."""
    from edgeslim import ui
    from edgeslim.environment import snapshot

    provider = providers.resolve(ep)
    limit = max_length(models)
    if limit and max(seqs) > limit:
        from edgeslim.errors import InputError

        raise InputError(f"sequence length {max(seqs)} exceeds the models' max length {limit}: lower --seq")
    base = next(iter(models))
    cells: list[dict[str, Any]] = []
    created: dict[str, dict[str, float]] = {}
    grid = [(t, b, s) for t in threads for b in batches for s in seqs]
    for t in threads:
        sessions = {}
        for name, path in models.items():
            before, began = rss_mb(), time.perf_counter()
            sessions[name] = session(path, t, provider, allow_fallback)
            created[name] = {
                "session_create_ms": round((time.perf_counter() - began) * 1e3, 1),
                "session_rss_mb": round(rss_mb() - before, 1),
            }
        for _, b, s in [cell for cell in grid if cell[0] == t]:
            ui.note(f"bench: threads {t}, batch {b}, seq {s}")
            times = interleaved(sessions, make_feeds(models, b, s), runs, warmup, time_budget_s)
            for name, ms in times.items():
                ratio, low, high = ratio_ci(times[base], ms)
                cells.append(
                    {
                        "model": name,
                        "threads": t,
                        "batch": b,
                        "seq": s,
                        **stats(ms, b),
                        "speedup_vs_baseline": round(ratio, 3),
                        "speedup_ci95": [round(low, 3), round(high, 3)],
                        "samples_ms": [round(float(x), 3) for x in ms],
                    }
                )
    placement = {
        name: providers.node_placement(path, provider, make_feeds(models, 1, 8), allow_fallback)
        for name, path in models.items()
    }
    return {
        "schema": SCHEMA,
        "ep": provider,
        "baseline": base,
        "models": {n: str(p) for n, p in models.items()},
        "settings": {
            "runs": runs,
            "warmup": warmup,
            "time_budget_s": time_budget_s,
            "spinning": False,
            "allow_fallback": allow_fallback,
            "inter_op_threads": 1,
        },
        "sessions": created,
        "placement": placement,
        "cells": cells,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **snapshot(),
    }
