#!/usr/bin/env bash
# Regenerate the committed reference results under results/: the `core` suite on both built-in
# models (hf backend; SmolLM2 on the scratch decoder too), speed and memory, the leaderboard in
# markdown and HTML, the report, and the plots. About 30 minutes on a 2-core CPU.
#   bash scripts/results.sh            # everything
#   bash scripts/results.sh runs       # only the evaluations (results/runs)
#   bash scripts/results.sh bench      # only the speed and memory figures (results/bench; idle machine)
#   bash scripts/results.sh reports    # only the tables and plots, from the runs already there
# Reference results are computed, not replayed: every run skips the response cache (--no-cache),
# and the script runs only from a clean git tree (outside results/), so each results file's
# git_commit names the code that computed it (and records git_dirty: false).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! git rev-parse --verify -q HEAD >/dev/null; then
  echo "error: scripts/results.sh must run from a git checkout (the results record the commit)" >&2
  exit 2
fi
dirty=$(git status --porcelain -- . ':(exclude)results')
if [ -n "$dirty" ]; then
  echo "error: the git tree has uncommitted changes; commit or stash them first (reference results must come from a clean commit):" >&2
  echo "$dirty" | head -5 >&2
  exit 2
fi
bash scripts/setup.sh --test  # gemma3-270m, llama.cpp and matplotlib too
export HF_HUB_OFFLINE=1
h=.venv/bin/harness
out=results
stage="${1:-all}"
case "$stage" in all|runs|bench|reports) ;; *) echo "error: unknown stage '$stage' (all, runs, bench or reports)" >&2; exit 2;; esac
if [ "$stage" = all ] || [ "$stage" = runs ]; then
  rm -rf "$out/runs"
  $h run --no-cache --model smollm2-135m --model gemma3-270m --tasks core --output "$out/runs"
  $h run --no-cache --model scratch:smollm2-135m --tasks core --output "$out/runs"
fi
if [ "$stage" = all ] || [ "$stage" = bench ]; then
  rm -rf "$out/bench"
  $h bench --model hf:smollm2-135m --model scratch:smollm2-135m --model llamacpp:smollm2-135m \
    --model hf:gemma3-270m --output "$out/bench"
fi
if [ "$stage" = runs ] || [ "$stage" = bench ]; then exit 0; fi
inputs=("$out"/runs/*.json)
[ -d "$out/bench" ] && inputs+=("$out"/bench/*.json)
$h leaderboard "${inputs[@]}" -o "$out/leaderboard.md"
$h leaderboard "${inputs[@]}" -o "$out/leaderboard.html" --title "harness: reference results"
$h report "$out"/runs/*.json --transpose -o "$out/report.md"
rm -rf "$out/plots" "$out/samples"
$h plot "${inputs[@]}" -o "$out/plots"
$h view "$out"/runs/*.json -o "$out/samples" --title "harness: reference samples"
echo "results: $out/leaderboard.md, $out/leaderboard.html, $out/report.md, $out/plots/, $out/samples/index.html"
