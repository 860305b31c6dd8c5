"""`harness leaderboard`: models ranked by mean win rate (HELM) on each task's primary metric.

The method (ranking.py has the rules): the default view ranks on each task's primary metric
only; `rank_on="all"` ranks on every shown column instead. Columns that are not comparable across
the models (tokenizer-dependent metrics across tokenizers) and exact transforms of a ranked
column are shown but not ranked. In a ranked column, a model's win rate is the number of models
it beats plus half the number it ties, over the number of other models with a value; a
difference within noise (relative 1e-6) or inside the 95% CIs is a tie. The mean over the
columns a model has is its mean win rate; ties on it are broken by the mean normalized score
(each column min-max scaled, best 1). The same weights evaluated on several backends with the
same numbers are one row, its backends listed as variants. Efficiency figures (`harness bench`)
are shown in the details, never ranked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.collect import Column, ModelEntry, format_ci, format_params, format_value, status_notes
from harness.report.ranking import (NOISE, ColumnStatus, ModelGroup, best_labels, column_statuses, group_by_weights,
                                    normalized_scores, primary_columns, win_rates)
from harness.report.report_tables import EFFICIENCY_NOTE, EfficiencyColumn, best_efficiency, md_escape, to_csv
from harness.report.report_tables import efficiency_columns  # noqa: F401 - re-exported for harness.cli.leaderboard and users

__all__ = ["FORMATS", "LeaderboardRow", "Ranking", "leaderboard_rows", "normalized_scores", "rank",
           "render_leaderboard", "win_rates", "EfficiencyColumn", "efficiency_columns"]

FORMATS = ("markdown", "html", "csv", "json")
RANK_ON = ("primary", "all")


@dataclass
class LeaderboardRow:
    group: ModelGroup
    rank: str
    mean_win_rate: float | None
    mean_normalized: float | None
    covered: int  # ranked columns this row has a value in
    n_columns: int  # ranked columns in all
    efficiency: dict[str, Any]

    @property
    def entry(self) -> ModelEntry:
        return self.group.entry


@dataclass
class Ranking:
    """A ranked leaderboard: rows best first, the columns shown on the first screen (one per task),
    every column with whether it is ranked, and how."""

    rows: list[LeaderboardRow]
    headline: list[Column]
    statuses: list[ColumnStatus]
    rank_on: str

    @property
    def ranked(self) -> list[Column]:
        return [s.column for s in self.statuses if s.ranked]

    def method(self) -> str:
        on = "each task's primary metric" if self.rank_on == "primary" else "every comparable metric"
        return (f"Ranked by mean win rate (HELM) over {on}, then by mean min-max normalized score. A model "
                "beats another in a column when it is better by more than numerical noise (relative 1e-6) "
                "and neither value lies inside the other's 95% CI; ties count half. Metrics that depend on "
                "the tokenizer are not ranked across tokenizers, exact transforms of one metric count once, "
                "and the same weights on several backends with the same numbers are one row. "
                "\"2=\" marks a shared rank, — a missing value.")


def rank(entries: Sequence[ModelEntry], cols: Sequence[Column], efficiency: Sequence[EfficiencyColumn] | None = None,
         rank_on: str = "primary") -> Ranking:
    """Group entries by weights, choose the ranked columns, and rank the groups."""
    if rank_on not in RANK_ON:
        raise HarnessError(f"--rank-on {rank_on!r}: choose one of {', '.join(RANK_ON)}")
    groups = group_by_weights(entries)
    reps = [g.entry for g in groups]
    headline = primary_columns(reps, cols) or list(cols)
    candidates = headline if rank_on == "primary" else list(cols)
    statuses = column_statuses(reps, cols)
    ranked = [s.column for s in statuses if s.ranked and s.column in candidates]
    for s in list(statuses):
        if s.ranked and s.column not in candidates:
            statuses[statuses.index(s)] = ColumnStatus(s.column, False, "not a primary metric")
    per_win: dict[str, list[float]] = {e.label: [] for e in reps}
    per_norm: dict[str, list[float]] = {e.label: [] for e in reps}
    for col in ranked:
        for label, w in win_rates(reps, col).items():
            per_win[label].append(w)
        for label, s in normalized_scores(reps, col).items():
            per_norm[label].append(s)
    rows = []
    for g in groups:
        e = g.entry
        covered = sum(1 for c in ranked if (cell := e.cell(c.task, c.metric)) and cell.value is not None)
        figures = {}
        for c in efficiency or []:
            figures[c.key] = next((v.efficiency[c.key] for v in g.variants if v.efficiency.get(c.key) is not None), None)
        rows.append(LeaderboardRow(g, "", _mean(per_win[e.label]), _mean(per_norm[e.label]), covered, len(ranked),
                                   figures))

    def key(r: LeaderboardRow) -> tuple[float, float]:
        return (r.mean_win_rate if r.mean_win_rate is not None else -1.0,
                r.mean_normalized if r.mean_normalized is not None else -1.0)

    rows.sort(key=lambda r: tuple(-x for x in key(r)))
    for i, r in enumerate(rows):
        first = min(j for j, o in enumerate(rows) if _same(key(o), key(r)))
        shared = any(o is not r and _same(key(o), key(r)) for o in rows)
        r.rank = "—" if r.covered == 0 else f"{first + 1}=" if shared else str(first + 1)
    return Ranking(rows, headline, statuses, rank_on)


def leaderboard_rows(entries: Sequence[ModelEntry], cols: Sequence[Column],
                     efficiency: Sequence[EfficiencyColumn] | None = None, rank_on: str = "primary") -> list[LeaderboardRow]:
    """Rows best first (see `rank`)."""
    return rank(entries, cols, efficiency, rank_on).rows


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Rates in [0, 1] equal within noise (absolute: they are differences of scaled scores)."""
    return all(math.isclose(x, y, rel_tol=0, abs_tol=NOISE) for x, y in zip(a, b))


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def render_leaderboard(entries: Sequence[ModelEntry], cols: Sequence[Column], fmt: str = "markdown", *,
                       details: bool = True, efficiency: Sequence[EfficiencyColumn] | None = None,
                       link_base: Path | None = None, max_samples: int = 25, title: str = "Leaderboard",
                       rank_on: str = "primary") -> str:
    """The leaderboard as markdown, self-contained HTML, CSV or JSON."""
    ranking = rank(entries, cols, efficiency, rank_on)
    eff = list(efficiency or [])
    if fmt in ("csv", "json"):
        records = [_record(r, ranking, cols if details else ranking.headline, eff) for r in ranking.rows]
        return to_csv(records) if fmt == "csv" else json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return _markdown(ranking, cols, eff, details)
    if fmt == "html":
        from harness.report.leaderboard_html import render_html

        return render_html(ranking, entries, cols, eff, details, link_base, max_samples, title)
    raise HarnessError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _record(r: LeaderboardRow, ranking: Ranking, cols: Sequence[Column], eff: list[EfficiencyColumn]) -> dict[str, Any]:
    e, m = r.entry, r.entry.model
    return {"rank": r.rank, "model": e.label, "mean_win_rate": r.mean_win_rate, "mean_normalized_score": r.mean_normalized,
            "columns": r.covered, "of": r.n_columns, "n_params": e.n_params, "backend": m.get("backend"),
            "variants": " ".join(v.label for v in r.group.variants), "dtype": m.get("dtype"),
            **{c.key: r.efficiency[c.key] for c in eff},
            **{f"{c.task}/{c.metric}": value(e, c) for c in cols}}


def value(e: ModelEntry, c: Column) -> float | None:
    cell = e.cell(c.task, c.metric)
    return cell.value if cell else None


def rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def model_text(r: LeaderboardRow) -> str:
    """The row's model, with the other backends it was measured on (same weights, same numbers)."""
    others = [v.label for v in r.group.variants[1:] if v.tasks]
    return r.entry.label + (f" (= {', '.join(others)})" if others else "")


def score_text(e: ModelEntry, c: Column, with_ci: bool = True) -> str:
    cell = e.cell(c.task, c.metric)
    if cell is None or cell.value is None:
        return "—"
    ci = format_ci(cell)
    return f"{format_value(cell.value)} {ci}" if with_ci and ci else format_value(cell.value)


def _markdown(ranking: Ranking, cols: Sequence[Column], eff: list[EfficiencyColumn], details: bool) -> str:
    rows = ranking.rows
    reps = [r.entry for r in rows]
    brief = [] if details else eff  # without the details table, efficiency joins the first one
    head = ["rank", "model", "params", "mean win rate", "mean normalized",
            *(md_escape(f"{c.task} {c.metric} {c.arrow}") for c in ranking.headline), *(md_escape(c.title) for c in brief)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", "---", "---:", "---:", "---:",
                                                              *["---:"] * (len(ranking.headline) + len(brief))]) + "|"]
    ranked = set(ranking.ranked)
    best = {c: best_labels(reps, c) if c in ranked else set() for c in cols}
    for r in rows:
        cells = [r.rank, md_escape(model_text(r)), format_params(r.entry.n_params), rate(r.mean_win_rate),
                 rate(r.mean_normalized)]
        cells += [_bold(md_escape(score_text(r.entry, c)), r.entry.label in best[c]) for c in ranking.headline]
        cells += [md_escape(c.fmt(r.efficiency[c.key]) if r.efficiency.get(c.key) is not None else "—") for c in brief]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n\n" + ranking.method() + " Bold: best, or indistinguishable from the best. " \
        "Brackets: 95% CI."
    out += (EFFICIENCY_NOTE + " They do not enter the ranking.\n") if brief else "\n"
    out += "".join(f"\nWarning: not a complete run: {md_escape(n)}\n"
                   for n in status_notes([v for r in rows for v in r.group.variants]))
    if details:
        out += "\n" + _markdown_details(ranking, cols, eff, best)
    return out


def _markdown_details(ranking: Ranking, cols: Sequence[Column], eff: list[EfficiencyColumn],
                      best: dict[Column, set[str]]) -> str:
    """Every metric of every entry (variants on their own line), and which columns are not ranked."""
    entries = [v for r in ranking.rows for v in r.group.variants]
    best_eff = [best_efficiency(entries, c) for c in eff]
    head = ["rank", "model", "backend", "dtype", *(md_escape(c.title) for c in eff), *(md_escape(c.title) for c in cols)]
    lines = ["### All metrics", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---:", "---", "---", "---", *["---:"] * (len(eff) + len(cols))]) + "|"]
    for r in ranking.rows:
        for v in r.group.variants:
            cells = [r.rank, md_escape(v.label), md_escape(v.model.get("backend") or "—"), md_escape(v.model.get("dtype") or "—")]
            cells += [_bold(md_escape(c.fmt(v.efficiency[c.key]) if v.efficiency.get(c.key) is not None else "—"),
                            v.label in b) for c, b in zip(eff, best_eff)]
            cells += [_bold(format_value(value(v, c)), v is r.entry and v.label in best[c]) for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {s.column.task} / {s.column.metric}: not ranked ({s.reason})" for s in ranking.statuses
             if not s.ranked and s.reason != "not a primary metric"]
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\nShown, not ranked:\n\n" + "\n".join(notes) + "\n"
    if eff:
        text += "\n" + EFFICIENCY_NOTE.strip() + " They do not enter the ranking.\n"
    return text


def _bold(text: str, best: bool) -> str:
    return f"**{text}**" if best and text != "—" else text
