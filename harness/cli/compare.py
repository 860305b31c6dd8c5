"""`harness compare BASELINE CANDIDATE`: deltas, CIs, paired tests, verdicts; a CI regression gate.

Quality metrics are judged by paired tests; speed and memory (results of `harness bench`) by the
relative change of their medians over repetitions against --speed-threshold / --memory-threshold.
"""

from __future__ import annotations

import argparse

from harness.errors import HarnessError

HELP = "compare a candidate results file with a baseline (regression gate)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("baseline", metavar="BASELINE.json", help="the reference results file")
    p.add_argument("candidate", metavar="CANDIDATE.json", help="the results file to check")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a metric regressed (or a baseline metric is missing from the candidate)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests (default 0.05)")
    p.add_argument("--threshold-abs", action="append", default=[], metavar="[METRIC=]X",
                   help="a change smaller than X (absolute, in the metric's units) never counts; "
                        "METRIC or TASK/METRIC= limits it to one metric; repeatable")
    p.add_argument("--threshold-rel", action="append", default=[], metavar="[METRIC=]X",
                   help="a change smaller than X times the baseline value never counts (0.02 = 2%%); repeatable")
    p.add_argument("--speed-threshold", type=float, default=0.15, metavar="X",
                   help="benchmark results: a timing or throughput (median over repetitions) regresses when it is "
                        "worse by at least X times the baseline median (default 0.15; timings are noisy)")
    p.add_argument("--memory-threshold", type=float, default=0.10, metavar="X",
                   help="benchmark results: peak memory regresses when it grows by at least X times the baseline "
                        "(default 0.10)")
    p.add_argument("--force", action="store_true",
                   help="compare even when the data or prompt hashes differ (the output says what differs)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (names or globs)")
    p.add_argument("--baseline-model", metavar="SPEC", help="the model to take from a baseline file with several")
    p.add_argument("--candidate-model", metavar="SPEC", help="the model to take from a candidate file with several")
    p.add_argument("--resamples", type=int, default=1000, metavar="N",
                   help="bootstrap / randomization resamples (default 1000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the resampling (default 1234)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report here as well as printing it")


def parse_thresholds(values: list[str], option: str) -> dict[str, float]:
    """'0.01' -> {'': 0.01}; 'bleu=1' -> {'bleu': 1.0}; 'lm_en/word_perplexity=2' likewise."""
    out: dict[str, float] = {}
    for text in values:
        key, _, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise HarnessError(f"{option} {text!r}: expected a number or METRIC=NUMBER") from None
        if value < 0:
            raise HarnessError(f"{option} {text!r}: a threshold cannot be negative")
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from harness.report.collect import write_output
    from harness.report.compare import Thresholds, compare_files
    from harness.report.compare_render import render_comparison

    if args.resamples < 10:
        raise HarnessError("--resamples must be at least 10")
    if args.speed_threshold < 0 or args.memory_threshold < 0:
        raise HarnessError("--speed-threshold and --memory-threshold cannot be negative")
    thresholds = Thresholds(args.alpha, parse_thresholds(args.threshold_abs, "--threshold-abs"),
                            parse_thresholds(args.threshold_rel, "--threshold-rel"),
                            speed=args.speed_threshold, memory=args.memory_threshold)
    comparison = compare_files(args.baseline, args.candidate, thresholds=thresholds, force=args.force,
                               tasks=args.tasks, baseline_model=args.baseline_model,
                               candidate_model=args.candidate_model, n_resamples=args.resamples, seed=args.seed)
    text = render_comparison(comparison, args.format)
    print(text, end="")
    if args.output:
        write_output(args.output, text)
    if args.fail_on_regression and comparison.failed:
        return 1
    return 0
