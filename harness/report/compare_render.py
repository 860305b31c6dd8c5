"""The report `harness compare` prints: deltas, CIs, paired tests and verdicts, as text, markdown or JSON."""

from __future__ import annotations

import json

from harness.report.collect import format_value
from harness.report.compare import Comparison
from harness.report.significance import SMALL_N
from harness.report.text_tables import text_table
from harness.report.report_tables import EFFICIENCY_TASK, md_escape


def _p(p: float | None, n: int = SMALL_N) -> str:
    if p is None:
        return "—"
    text = f"{p:.3f}" if p >= 0.001 else "<0.001"
    return f"{text} (n={n})" if 0 < n < SMALL_N else text  # small samples say so where the p is read


def _delta(x: float | None) -> str:
    return "—" if x is None else ("+" if x > 0 else "") + format_value(x)


def render_comparison(comp: Comparison, fmt: str = "text") -> str:
    """The comparison as a table with a verdict line, warnings and notes (fmt: text, markdown, json)."""
    if fmt == "json":
        return json.dumps(comp.to_dict(), indent=2, ensure_ascii=False) + "\n"
    marks = {"regressed": "REGRESSED", "improved": "improved", "unchanged": "unchanged", "missing": "MISSING",
             "new": "new"}
    header = ["model", "task", "metric", "baseline", "candidate", "delta", "95% CI of delta", "p", "test", "verdict"]
    rows = []
    for r in comp.rows:
        ci = f"[{_delta(r.ci_low)}, {_delta(r.ci_high)}]" if r.ci_low is not None else "—"
        rows.append([r.model, r.task, f"{r.metric} {'↑' if r.higher_is_better else '↓'}", format_value(r.baseline),
                     format_value(r.candidate), _delta(r.delta), ci, _p(r.p_value, r.n), r.test, marks[r.verdict]])
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
