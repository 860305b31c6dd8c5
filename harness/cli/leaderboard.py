"""`harness leaderboard RESULTS...`: models ranked by mean win rate and mean normalized score."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.report import add_common, emit, output_format
from harness.report.collect import columns, load_entries
from harness.report.leaderboard import FORMATS, RANK_ON, efficiency_columns, render_leaderboard

HELP = "rank models by mean win rate on each task's primary metric"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, FORMATS)
    p.add_argument("--no-details", action="store_true", help="leave out the per-(task, metric) value columns")
    p.add_argument("--rank-on", choices=RANK_ON, default="primary",
                   help="primary: each task's primary metric (default); all: every comparable metric")


def run(args: argparse.Namespace) -> int:
    entries = load_entries(args.results)
    cols = columns(entries, args.tasks, args.metrics)
    fmt = output_format(args, FORMATS)
    link_base = Path(args.output).parent if args.output else None
    text = render_leaderboard(entries, cols, fmt, details=not args.no_details,
                              efficiency=efficiency_columns(entries), link_base=link_base,
                              max_samples=args.max_samples, title=args.title or "Leaderboard", rank_on=args.rank_on)
    emit(text, args.output)
    return 0
