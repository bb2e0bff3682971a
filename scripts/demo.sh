#!/usr/bin/env bash
# Set up rhlens and show what it measures on the bundled demo checkpoint, a tiny Qwen2.5-VL trained
# on synthetic scenes of coloured shapes (scripts/train_demo.py), or on your own checkpoint:
#   scripts/demo.sh [--model DIR_OR_HUB_ID] [--image IMG] [--name NAME] [any model flag, e.g. --device cpu]
# Writes everything under runs/demo/ (override with OUT=...); a second run resumes the sweeps and
# the benchmark run and redraws the figures. The story, in order: where the model looks while it
# answers (trace), what happens when its thinking is cut short or stretched with "Wait" (sweeps),
# and how accuracy and RH-AUC move with thinking length on the demo benchmark (eval, score, rhauc).
set -euo pipefail
cd "$(dirname "$0")/.."
model_flags=()  # for every command that runs the model
image_flags=()  # for the commands on one image (trace, sweeps)
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
# Two held-out scenes of the demo benchmark (assets/bench) whose questions are the prompts below:
# the first "What color is the circle?" among three objects of three colours (perception) and the
# first "How many circles are there?" with the most objects (four) and two circles (reasoning over the
# objects the chain lists). --image replaces both images.
look_image=(--image assets/bench/per_images/p006.png)
count_image=(--image assets/bench/reason_images/r012.png)
if [ ${#image_flags[@]} -gt 0 ]; then look_image=("${image_flags[@]}"); count_image=("${image_flags[@]}"); fi
look_prompt="What color is the circle?"
count_prompt="How many circles are there?"

echo "== 1. where each layer looks while the model thinks and answers (trace) =="
"$rh" trace "${model_flags[@]}" "${look_image[@]}" --prompt "$look_prompt" --max-new-tokens 48 \
  --map-window 4 --per-head --out "$out/trace" --force --quiet
grep -m1 -o '"text": *"[^"]*"' "$out/trace/trace.json" || true

echo "== 2. thinking cut short or let run: one count question at 8 thinking budgets (sweep) =="
# The trained chains list the objects asked about, 5 tokens each (`1 circle top left ,`), so two
# circles take 10; budgets below that cut the list the count is read from, budgets above it leave
# the chain as the model ends it.
"$rh" sweep "${model_flags[@]}" "${count_image[@]}" --prompt "$count_prompt" \
  --budgets 0,2,4,8,12,16,24,32 --max-new-tokens 64 --answer-cue "<answer>" \
  --out "$out/sweep" --quiet
cat "$out/sweep/summary.csv"

echo "== 3. thinking stretched: the same question with 0-3 \"Wait\" extensions (sweep) =="
"$rh" sweep "${model_flags[@]}" "${count_image[@]}" --prompt "$count_prompt" \
  --waits 0,1,2,3 --max-new-tokens 160 --out "$out/waits" --quiet
cat "$out/waits/summary.csv"

echo "== 4. figures from the saved trace (no model needed) =="
"$rh" figures --trace "$out/trace" --out "$out/figures" --force --quiet

echo "== 5. the demo benchmark at 6 thinking budgets: answer, score, RH-AUC =="
"$rh" eval "${model_flags[@]}" --bench assets/bench --budgets 0,2,4,8,16,32 --max-new-tokens 64 \
  --answer-cue "<answer>" --out "$out/eval" --quiet
"$rh" score --run "$out/eval" --quiet
"$rh" rhauc --run "$out/eval" --bootstrap 1000 \
  || echo "(RH-AUC is undefined for this run: see the message above)"
"$rh" figures --results "$out/eval/metrics.csv" --out "$out/eval/figures" --force --quiet

echo
echo "done: traces, tables and figures are under $out/"
echo "  $out/trace/             trace.json + attention.safetensors"
echo "  $out/figures/           heatmaps on the image, per-layer grids, allocation bars, shift curves"
echo "  $out/sweep/summary.csv  one row per budget; $out/sweep/figures/"
echo "  $out/waits/summary.csv  one row per number of \"Wait\" extensions; $out/waits/figures/"
echo "  $out/eval/metrics.csv   accuracies per setting; $out/eval/figures/"
