"""`harness export --format lm-eval RESULTS.json -o DIR`: our results in another tool's format."""

from __future__ import annotations

import argparse

HELP = "write results in lm-evaluation-harness's format (results_*.json and samples_*.jsonl)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files from `harness run`")
    p.add_argument("--format", "-f", choices=["lm-eval"], default="lm-eval", help="the format (default lm-eval)")
    p.add_argument("--output", "-o", default="lm-eval-results", metavar="DIR",
                   help="folder to write into: DIR/<model>/results_<date>.json (default lm-eval-results/)")


def run(args: argparse.Namespace) -> int:
    from harness.interop.lmeval_export import export_lmeval

    for path in args.results:
        for written in export_lmeval(path, args.output):
            print(written)
    return 0
