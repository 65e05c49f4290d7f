#!/usr/bin/env bash
# Distillation ablation on SST-2: same teacher, same 3-layer student init (teacher layers
# 1,3,5), same step budget; prints a Markdown table of dev accuracy.
#   tools/ablation_distill.sh out/train/teacher 300
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=${1:-out/train/teacher}
STEPS=${2:-300}
OUT=out/ablation
mkdir -p "$OUT"
common=(--teacher "$TEACHER" --student-layers 3 --init every-other --data sst2:train --eval sst2:dev
        --max-steps "$STEPS" --eval-every "$STEPS" --save-every "$STEPS" --batch-size 32 --max-length 64
        --lr 1e-4 --force)
unl=(--unlabeled wikitext2 --unlabeled-size 2000)
declare -A variants=(
  [1-soft-kl]="--kl 1"
  [2-kl+nll]="--kl 1 --nll 1"
  [3-kl+nll+filter]="--kl 1 --nll 1 --min-confidence 0.9"
  [4-+hidden+attention]="--kl 1 --nll 1 --min-confidence 0.9 --hidden 1 --attention 1"
  [5-no-distillation]="--kl 0 --alpha 1"
)
for name in $(printf '%s\n' "${!variants[@]}" | sort); do
  extra=()
  [ "$name" != "5-no-distillation" ] && extra=("${unl[@]}")
  # shellcheck disable=SC2086
  .venv/bin/edgeslim distill "${common[@]}" "${extra[@]}" ${variants[$name]} -o "$OUT/$name" > "$OUT/$name.log" 2>&1
done
echo "| variant | dev accuracy (best of $STEPS steps) | wall s |"
echo "|---|---:|---:|"
for name in $(printf '%s\n' "${!variants[@]}" | sort); do
  python3 - "$OUT/$name" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1]); r = json.loads((d / "edgeslim-train.json").read_text())
log = (d.parent / (d.name + ".log")).read_text()
wall = [l.split(":")[1].strip() for l in log.splitlines() if "wall_s" in l][-1]
print(f"| {d.name} | {r['best']['accuracy']:.4f} | {wall} |")
PY
done
