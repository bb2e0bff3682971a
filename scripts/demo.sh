#!/usr/bin/env bash
# Set up rhlens and run its main jobs on the bundled demo checkpoint (random weights) and image,
# or on your own checkpoint and image:
#   scripts/demo.sh [--model DIR_OR_HUB_ID] [--image IMG] [--name NAME] [any model flag, e.g. --device cpu]
# Writes everything under runs/demo/ (override with OUT=...); a second run resumes the sweep and the
# benchmark run and redraws the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
model_flags=()  # for every command that runs the model
image_flags=()  # for the commands on one image (trace, sweep)
while [ $# -gt 0 ]; do
  case "$1" in
    --image) [ $# -ge 2 ] || { echo "error: --image needs a file" >&2; exit 2; }
      image_flags+=(--image "$2"); shift 2 ;;
    --*=*) model_flags+=("$1"); shift ;;
    --*) if [ $# -ge 2 ] && [[ "$2" != --* ]]; then model_flags+=("$1" "$2"); shift 2;
         else model_flags+=("$1"); shift; fi ;;
    *) echo "error: unexpected argument $1 (flags only: --model DIR --image IMG ...)" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
rh=target/release/rhlens
out=${OUT:-runs/demo}
mkdir -p "$out"
prompt="How many trees are in the picture? Think step by step, then answer."

echo "== 1. where each layer looks while the model reasons (trace) =="
"$rh" trace "${model_flags[@]}" "${image_flags[@]}" --prompt "$prompt" --max-new-tokens 96 \
  --map-window 16 --per-head --out "$out/trace" --force --quiet

echo "== 2. overthinking diagnosis: the same question at 7 thinking budgets (sweep) =="
"$rh" sweep "${model_flags[@]}" "${image_flags[@]}" --prompt "$prompt" \
  --budgets 0,16,32,48,64,80,96 --max-new-tokens 128 --answer-cue "<answer>" \
  --out "$out/sweep" --quiet

echo "== 3. figures from the saved trace (no model needed) =="
"$rh" figures --trace "$out/trace" --out "$out/figures" --force --quiet

echo "== 4. a small benchmark run: answer, score, RH-AUC =="
"$rh" eval "${model_flags[@]}" --bench assets/bench --budgets 0,32,64 --max-new-tokens 96 \
  --answer-cue "<answer>" --out "$out/eval" --quiet
"$rh" score --run "$out/eval" --quiet
"$rh" rhauc --run "$out/eval" || echo "(RH-AUC is undefined for this run: see the message above)"
"$rh" figures --results "$out/eval/metrics.csv" --out "$out/eval/figures" --force --quiet

echo
echo "done: traces, tables and figures are under $out/"
echo "  $out/trace/            trace.json + attention.safetensors"
echo "  $out/figures/          heatmaps on the image, per-layer grids, allocation bars, shift curves"
echo "  $out/sweep/summary.csv one row per budget; $out/sweep/figures/"
echo "  $out/eval/metrics.csv  accuracies per setting; $out/eval/figures/"
