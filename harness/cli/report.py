"""`harness report RESULTS...`: models by (task, metric) with 95% CIs, in five formats."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report.collect import columns, load_entries, write_output
from harness.report.report_tables import FORMATS, render_report

HELP = "tables of results files: models by (task, metric) with 95% CIs"


def add_common(p: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    """Arguments shared by report and leaderboard."""
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="results files from `harness run` (each may hold several models)")
    p.add_argument("--format", "-f", choices=formats, help="output format (default: from --output's suffix, else markdown)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of printing")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (names or globs)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="only these metrics (names or globs)")
    p.add_argument("--title", help="title of an HTML page")
    p.add_argument("--max-samples", type=int, default=25, metavar="N",
                   help="HTML: per-sample outputs embedded per model and task (default 25; the JSONL is linked)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, FORMATS)
    p.add_argument("--no-ci", action="store_true", help="leave out the 95%% CIs")
    p.add_argument("--transpose", action="store_true", help="one row per (task, metric), one column per model")


_SUFFIXES = {".md": "markdown", ".csv": "csv", ".tex": "latex", ".html": "html", ".htm": "html", ".json": "json"}


def output_format(args: argparse.Namespace, formats: tuple[str, ...]) -> str:
    if args.format:
        return args.format
    guess = _SUFFIXES.get(Path(args.output).suffix.lower()) if args.output else None
    return guess if guess in formats else "markdown"


def emit(text: str, output: str | None) -> None:
    if output:
        write_output(output, text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    entries = load_entries(args.results)
    cols = columns(entries, args.tasks, args.metrics)
    fmt = output_format(args, FORMATS)
    link_base = Path(args.output).parent if args.output else None
    text = render_report(entries, cols, fmt, ci=not args.no_ci, transpose=args.transpose, link_base=link_base,
                         max_samples=args.max_samples, title=args.title or "Results")
    emit(text, args.output)
    return 0
