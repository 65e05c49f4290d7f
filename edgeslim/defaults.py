"""Numbers several modules share, named once: timing runs and warmup, bootstrap resamples,
parity tolerances, the external-data threshold. A step's own defaults live in its Config."""

from __future__ import annotations

# Timing. Interleaved timing of several models (bench, gate latency budgets):
BENCH_RUNS = 50  # timed runs per model and grid cell
BENCH_WARMUP = 5  # untimed runs per model first (also prune's --target-latency)
# Quicker side-by-side timing where a step measures on the way (report, shapes, prune's
# --target-latency): ratios of models timed together, not a headline number.
QUICK_RUNS = 30
QUICK_WARMUP = 3

# Bootstrap resamples.
BOOTSTRAP = 1000  # a metric's 95% CI (eval, tools)
QUICK_BOOTSTRAP = 100  # where only the value is used (gate's metric budgets, report); eval's minimum
RATIO_BOOTSTRAP = 2000  # a latency ratio's or a paired difference's 95% CI

# ONNX vs PyTorch parity (export, optimize): |ort - torch| <= atol + rtol * |torch|.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-3

# Weights go to external data above this size: protobuf refuses messages past 2 GB.
EXTERNAL_DATA_MB = 1800.0
