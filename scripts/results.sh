#!/usr/bin/env bash
# Regenerate the committed reference results under results/: the `core` suite on both built-in
# models (hf backend; SmolLM2 on the scratch decoder too), speed and memory, the leaderboard in
# markdown and HTML, the report, and the plots. About 30 minutes on a 2-core CPU.
#   bash scripts/results.sh            # everything
#   bash scripts/results.sh reports    # only the tables and plots, from the runs already there
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test  # gemma3-270m, llama.cpp and matplotlib too
export HF_HUB_OFFLINE=1
h=.venv/bin/harness
out=results
if [ "${1:-all}" != reports ]; then
  rm -rf "$out/runs" "$out/bench"
  $h run --model smollm2-135m --model gemma3-270m --tasks core --output "$out/runs"
  $h run --model scratch:smollm2-135m --tasks core --output "$out/runs"
  if $h bench --help >/dev/null 2>&1; then
    $h bench --model hf:smollm2-135m --model scratch:smollm2-135m --model llamacpp:smollm2-135m \
      --model hf:gemma3-270m --output "$out/bench"
  fi
fi
inputs=("$out"/runs/*.json)
[ -d "$out/bench" ] && inputs+=("$out"/bench/*.json)
$h leaderboard "${inputs[@]}" -o "$out/leaderboard.md"
$h leaderboard "${inputs[@]}" -o "$out/leaderboard.html" --title "harness: reference results"
$h report "$out"/runs/*.json --transpose -o "$out/report.md"
rm -rf "$out/plots" "$out/samples"
$h plot "${inputs[@]}" -o "$out/plots"
$h view "$out"/runs/*.json -o "$out/samples" --title "harness: reference samples"
echo "results: $out/leaderboard.md, $out/leaderboard.html, $out/report.md, $out/plots/, $out/samples/index.html"
