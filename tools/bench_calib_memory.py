"""Peak memory of calibration vs number of samples: edgeslim's batched calibration against
onnxruntime's default (every activation kept until the end). Each measurement runs in a
fresh process; peak RSS is that process's ru_maxrss.

    .venv/bin/python tools/bench_calib_memory.py [--artifact out/bench-quant/fused]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
from edgeslim import data, quantization
artifact, method, n, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
work = Path(tempfile.mkdtemp())
pre = work / "pre.onnx"
quantization.preprocess(artifact / "model.onnx", pre, external=False)
examples = data.load("sst2:train").head(n)
max_len = json.loads((artifact / "edgeslim.json").read_text())["max_length"]
batches = data.batches(artifact, examples, 16, max_len)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "edgeslim":
    quantization.calibrate(pre, batches, method, ["MatMul"], False, False, work)
else:  # onnxruntime's own loop: one collect_data over every sample (padded to one length)
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    feeds = list(data.batches(artifact, examples, 1, max_len, pad_to=64))
    class Reader:
        def __init__(self): self.it = iter(feeds)
        def get_next(self): return next(self.it, None)
    method_enum = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    cal = create_calibrator(pre, ["MatMul"], augmented_model_path=str(work / "aug.onnx"),
                            calibrate_method=method_enum, extra_options={"symmetric": False})
    cal.collect_data(Reader())
    cal.compute_data()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mb": round(peak / 1024), "before_calibration_mb": round(base / 1024)}))
"""


def measure(artifact: str, method: str, samples: int, mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, artifact, method, str(samples), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", default="out/bench-quant/fused")
    args = parser.parse_args()
    rows = []
    for mode, sizes in (("edgeslim", (100, 2000)), ("onnxruntime-default", (100, 400))):
        for method in ("entropy", "percentile"):
            peaks = {n: measure(args.artifact, method, n, mode) for n in sizes}
            small, large = sizes
            rows.append(
                {
                    "calibration": mode,
                    "method": method,
                    **{f"peak_mb_{n}": peaks[n]["peak_rss_mb"] for n in sizes},
                    "ratio": round(peaks[large]["peak_rss_mb"] / peaks[small]["peak_rss_mb"], 2),
                }
            )
    print(json.dumps(rows, indent=2))
    print("\n| calibration | method | samples | peak RSS MB | ratio |\n|---|---|---|---|---:|")
    for r in rows:
        sizes = [k for k in r if k.startswith("peak_mb_")]
        counts = " / ".join(k.removeprefix("peak_mb_") for k in sizes)
        peaks = " / ".join(str(r[k]) for k in sizes)
        print(f"| {r['calibration']} | {r['method']} | {counts} | {peaks} | {r['ratio']}x |")


if __name__ == "__main__":
    main()
