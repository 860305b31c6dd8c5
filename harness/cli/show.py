"""`harness show RESULTS.json...`: print the table of results files again."""

from __future__ import annotations

import argparse

HELP = "print the table of a results file again"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json")


def run(args: argparse.Namespace) -> int:
    from harness.report.text_tables import results_table
    from harness.results import load_results

    for path in args.results:
        print(results_table(load_results(path)))
    return 0
