"""`harness plot RESULTS...`: the figures that fit the results (size, bars, efficiency), PNG and SVG."""

from __future__ import annotations

import argparse

from harness.errors import HarnessError
from harness.report.collect import columns, load_entries
from harness.report.plots import KINDS, save_plots

HELP = "figures: score against parameter count, bars per task, quality against speed"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files from `harness run`")
    p.add_argument("--kind", nargs="+", choices=KINDS, default=None,
                   help="size: each task's primary score against parameter count, with CIs and chance lines; "
                        "bars: each task's primary score per model; efficiency: quality against decode speed "
                        "with the Pareto front (default: those that fit the results given)")
    p.add_argument("--format", nargs="+", choices=["png", "svg"], default=["png", "svg"], dest="formats",
                   help="image formats (default: png svg)")
    p.add_argument("--output-dir", "-o", default="plots", metavar="DIR", help="where the images go (default plots/)")
    p.add_argument("--prefix", default="", help="file name prefix: DIR/<prefix><kind>.<format>")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (names or globs)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="only these metrics (names or globs)")


def run(args: argparse.Namespace) -> int:
    entries = load_entries(args.results)
    cols = columns(entries, args.tasks, args.metrics)
    try:
        paths = save_plots(entries, cols, args.output_dir, args.kind, args.formats, args.prefix)
    except ModuleNotFoundError as err:
        if err.name != "matplotlib":
            raise
        raise HarnessError('harness plot needs matplotlib: pip install "harness-lm[plots]"') from None
    for path in paths:
        print(path)
    return 0
