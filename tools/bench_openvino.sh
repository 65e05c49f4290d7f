#!/usr/bin/env bash
# Measure artifacts on onnxruntime's OpenVINO execution provider, for real.
#
# onnxruntime-openvino ships its own `onnxruntime` module (1.24 line), so it cannot live
# beside the main environment's onnxruntime: this script builds .venv-openvino with the
# runtime-only pieces (no torch, no transformers), installs edgeslim without dependencies,
# and runs `edgeslim bench --ep openvino` there.
#
#   tools/bench_openvino.sh out/minilm-export out/minilm-int8 -- --threads 2 --batch 1 --seq 128
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-openvino
if [ ! -x "$VENV/bin/edgeslim" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "onnxruntime-openvino==1.24.1" onnx tokenizers numpy \
    typer pydantic rich pyyaml
  "$VENV/bin/python" -m pip install -q --no-deps -e .
fi
artifacts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do artifacts+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
"$VENV/bin/edgeslim" doctor
exec "$VENV/bin/edgeslim" bench "${artifacts[@]}" --ep openvino "$@"
