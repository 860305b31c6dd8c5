"""`harness view RESULTS... -o DIR`: a static site with every sample, for search and regression hunts."""

from __future__ import annotations

import argparse

from harness.report.viewer import build_site

HELP = "a static site of every sample: search, filter, sort, diff two runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files from `harness run`")
    p.add_argument("--output-dir", "-o", default="samples-site", metavar="DIR",
                   help="where the site goes: DIR/index.html opens from disk (default samples-site/)")
    p.add_argument("--title", default="Samples", help="the page title")


def run(args: argparse.Namespace) -> int:
    print(build_site(args.results, args.output_dir, args.title))
    return 0
