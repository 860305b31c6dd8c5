"""`harness import --format lm-eval results_*.json -o DIR`: another tool's results as ours, for the reporter."""

from __future__ import annotations

import argparse

HELP = "convert lm-evaluation-harness results files into harness results files (then report, leaderboard, ...)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="lm-eval results_<date>.json files (their samples_<task>_<date>.jsonl beside are read too)")
    p.add_argument("--format", "-f", choices=["lm-eval"], default="lm-eval", help="the format (default lm-eval)")
    p.add_argument("--output", "-o", default="runs", metavar="DIR", help="where the converted files go (default runs/)")


def run(args: argparse.Namespace) -> int:
    from harness.interop.lmeval_import import import_lmeval

    for path in args.results:
        print(import_lmeval(path, args.output))
    return 0
