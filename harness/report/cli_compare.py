"""`harness compare BASELINE CANDIDATE`: deltas, CIs, paired tests, verdicts; a CI regression gate.

Quality metrics are judged by paired tests; speed and memory (results of `harness bench`) by the
relative change of their medians over repetitions against --speed-threshold / --memory-threshold.
"""

from __future__ import annotations

import argparse
import json

from harness.errors import HarnessError
from harness.report.collect import format_value, write_output
from harness.report.compare import Comparison, Thresholds, compare_files
from harness.report.table import text_table
from harness.report.tables import EFFICIENCY_TASK, md_escape


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


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def _delta(x: float | None) -> str:
    return "—" if x is None else ("+" if x > 0 else "") + format_value(x)


def render_comparison(comp: Comparison, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(comp.to_dict(), indent=2, ensure_ascii=False) + "\n"
    marks = {"regressed": "REGRESSED", "improved": "improved", "unchanged": "unchanged", "missing": "MISSING",
             "new": "new"}
    header = ["model", "task", "metric", "baseline", "candidate", "delta", "95% CI of delta", "p", "test", "verdict"]
    rows = []
    for r in comp.rows:
        ci = f"[{_delta(r.ci_low)}, {_delta(r.ci_high)}]" if r.ci_low is not None else "—"
        rows.append([r.model, r.task, f"{r.metric} {'↑' if r.higher_is_better else '↓'}", format_value(r.baseline),
                     format_value(r.candidate), _delta(r.delta), ci, _p(r.p_value), r.test, marks[r.verdict]])
    counts = ", ".join(f"{comp.count(v)} {v}" for v in ("regressed", "improved", "unchanged", "missing", "new")
                       if comp.count(v) or v in ("regressed", "improved", "unchanged"))
    t = comp.thresholds
    rule = f"alpha {t.alpha}"
    if t.absolute:
        rule += "; absolute thresholds " + ", ".join(f"{k or 'all'} {v:g}" for k, v in t.absolute.items())
    if t.relative:
        rule += "; relative thresholds " + ", ".join(f"{k or 'all'} {v:g}" for k, v in t.relative.items())
    several = len(comp.pairs) > 1
    notes = [f"{r.model + ' ' if several else ''}{r.task}/{r.metric}: {r.note}" for r in comp.rows if r.note]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * 5 + "---|---|"]
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
        body = "\n".join(lines)
    else:
        body = text_table(header, rows, "lllrrrrrll")
    out = [f"baseline:  {comp.baseline}", f"candidate: {comp.candidate}", "", body, "",
           f"verdict: {counts} ({rule}; delta = candidate - baseline)"]
    if any(r.task == EFFICIENCY_TASK for r in comp.rows):
        out.append(f"speed and memory: timings are noisy, so medians over the repetitions of each file are compared; "
                   f"a change counts from {t.speed:.0%} of the baseline median (timings, --speed-threshold) and "
                   f"{t.memory:.0%} (peak memory, --memory-threshold)")
    out += [f"warning: {w}" for w in comp.warnings]
    out += [f"note: {n}" for n in notes]
    if fmt == "markdown":
        out = [line if not line or line.startswith("|") else line + "  " for line in out]
    return "\n".join(out) + "\n"
