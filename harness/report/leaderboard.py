"""`harness leaderboard`: models ranked by mean win rate over (task, metric) columns, as HELM does.

Win rate (HELM's `compute_aggregate_row_win_rates`): in each column with two or more values, a
model's win rate is the number of models it beats, plus half the number it ties, over the
number of other models with a value; the mean over the columns the model has is its mean win
rate. Normalized score: each column min-max scaled over the models that have it (best 1, worst
0, direction respected; columns where all values are equal are left out), averaged per model.
Missing cells count in neither mean and are shown as "—"; the coverage column says how many
columns a model has. Ties in the ranking share a rank, shown as "2=". Efficiency figures (results
of `harness bench` for the same model spec) are shown beside quality, the best of each in bold;
they do not enter the ranking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report import html as H
from harness.report.collect import Column, ModelEntry, best_labels, format_ci, format_params, format_value
from harness.report.tables import EFFICIENCY_NOTE, EfficiencyColumn, best_efficiency, efficiency_value, md_escape, to_csv
from harness.report.tables import efficiency_columns  # noqa: F401 - re-exported for harness.cli.leaderboard and users

FORMATS = ("markdown", "html", "csv", "json")


@dataclass
class LeaderboardRow:
    entry: ModelEntry
    rank: str
    mean_win_rate: float | None
    mean_normalized: float | None
    covered: int
    n_columns: int
    efficiency: dict[str, Any]


def win_rates(entries: Sequence[ModelEntry], col: Column) -> dict[str, float]:
    """Per model label, its win rate in this column (ties count half); {} with fewer than 2 values."""
    values = {e.label: c.value for e in entries if (c := e.cell(col.task, col.metric)) and c.value is not None}
    if len(values) < 2:
        return {}
    sign = 1 if col.higher_is_better else -1
    out = {}
    for label, v in values.items():
        beats = sum(1 for o, w in values.items() if o != label and sign * (v - w) > 0 and not _tie(v, w))
        ties = sum(1 for o, w in values.items() if o != label and _tie(v, w))
        out[label] = (beats + ties / 2) / (len(values) - 1)
    return out


def normalized_scores(entries: Sequence[ModelEntry], col: Column) -> dict[str, float]:
    """Per model label, the column's value min-max scaled to [0, 1], best = 1; {} if all equal."""
    values = {e.label: c.value for e in entries if (c := e.cell(col.task, col.metric)) and c.value is not None}
    if len(values) < 2:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if _tie(lo, hi):
        return {}
    return {k: ((v - lo) if col.higher_is_better else (hi - v)) / (hi - lo) for k, v in values.items()}


def _tie(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def leaderboard_rows(entries: Sequence[ModelEntry], cols: Sequence[Column],
                     efficiency: Sequence[EfficiencyColumn] | None = None) -> list[LeaderboardRow]:
    """Models sorted by mean win rate, then mean normalized score; missing cells left out."""
    per_win = {e.label: [] for e in entries}
    per_norm = {e.label: [] for e in entries}
    for col in cols:
        for label, w in win_rates(entries, col).items():
            per_win[label].append(w)
        for label, s in normalized_scores(entries, col).items():
            per_norm[label].append(s)
    rows = []
    for e in entries:
        covered = sum(1 for c in cols if (cell := e.cell(c.task, c.metric)) and cell.value is not None)
        rows.append(LeaderboardRow(e, "", _mean(per_win[e.label]), _mean(per_norm[e.label]), covered, len(cols),
                                   {c.key: e.efficiency.get(c.key) for c in efficiency or []}))

    def key(r: LeaderboardRow) -> tuple:
        return (-(r.mean_win_rate if r.mean_win_rate is not None else -1),
                -(r.mean_normalized if r.mean_normalized is not None else -1))

    rows.sort(key=key)
    for i, r in enumerate(rows):
        tied = [o for o in rows if o is not r and _same(key(o), key(r))]
        first = min([i, *(rows.index(o) for o in tied)]) + 1
        r.rank = f"{first}=" if tied else str(first)
    return rows


def _same(a: tuple, b: tuple) -> bool:
    return all(_tie(x, y) for x, y in zip(a, b))


def render_leaderboard(entries: Sequence[ModelEntry], cols: Sequence[Column], fmt: str = "markdown", *,
                       details: bool = True, efficiency: Sequence[EfficiencyColumn] | None = None,
                       link_base: Path | None = None, max_samples: int = 25, title: str = "Leaderboard") -> str:
    rows = leaderboard_rows(entries, cols, efficiency)
    eff = list(efficiency or [])
    if fmt in ("csv", "json"):
        records = [{"rank": r.rank, "model": r.entry.label, "mean_win_rate": r.mean_win_rate,
                    "mean_normalized_score": r.mean_normalized, "columns": r.covered, "of": r.n_columns,
                    "n_params": r.entry.n_params, "backend": r.entry.model.get("backend"),
                    "dtype": r.entry.model.get("dtype"), **{c.key: r.efficiency[c.key] for c in eff},
                    **({f"{c.task}/{c.metric}": _value(r.entry, c) for c in cols} if details else {})}
                   for r in rows]
        return to_csv(records) if fmt == "csv" else json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return _markdown(rows, cols, eff, details)
    if fmt == "html":
        return _html(rows, entries, cols, eff, details, link_base, max_samples, title)
    raise HarnessError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _value(e: ModelEntry, c: Column) -> float | None:
    cell = e.cell(c.task, c.metric)
    return cell.value if cell else None


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _efficiency_text(r: LeaderboardRow, c: EfficiencyColumn) -> str:
    value = r.efficiency[c.key]
    return "—" if value is None else c.fmt(value)


def _markdown(rows: list[LeaderboardRow], cols: Sequence[Column], eff: list[EfficiencyColumn], details: bool) -> str:
    shown = list(cols) if details else []
    header = ["rank", "model", "mean win rate", "mean normalized", "columns", "params", "backend", "dtype",
              *(md_escape(c.title) for c in eff), *(md_escape(c.title) for c in shown)]
    align = ["---:", "---", "---:", "---:", "---:", "---:", "---", "---", *["---:"] * (len(eff) + len(shown))]
    best = [best_labels([r.entry for r in rows], c) for c in shown]
    best_eff = [best_efficiency([r.entry for r in rows], c) for c in eff]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        m = r.entry.model
        cells = [r.rank, md_escape(r.entry.label), _rate(r.mean_win_rate), _rate(r.mean_normalized),
                 f"{r.covered}/{r.n_columns}", format_params(r.entry.n_params), md_escape(m.get("backend") or "—"),
                 md_escape(m.get("dtype") or "—"),
                 *(_bold(md_escape(_efficiency_text(r, c)), r.entry.label in b) for c, b in zip(eff, best_eff))]
        for c, b in zip(shown, best):
            text = format_value(_value(r.entry, c))
            cells.append(f"**{text}**" if r.entry.label in b else text)
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Ranked by mean win rate over (task, metric) columns (ties count half), then by mean min-max "
            "normalized score; — marks a missing value, \"2=\" a shared rank.")
    if details or eff:
        note += " Bold: best in its column."
    if eff:
        note += EFFICIENCY_NOTE + " They do not enter the ranking."
    return "\n".join(lines) + "\n\n" + note + "\n"


def _bold(text: str, best: bool) -> str:
    return f"**{text}**" if best and text != "—" else text


def _html(rows: list[LeaderboardRow], entries: Sequence[ModelEntry], cols: Sequence[Column],
          eff: list[EfficiencyColumn], details: bool, link_base: Path | None, max_samples: int, title: str) -> str:
    hc = [H.HtmlColumn("rank", first="ascending"), H.HtmlColumn("model", False, "ascending"),
          H.HtmlColumn("mean win rate"), H.HtmlColumn("mean normalized"), H.HtmlColumn("columns"),
          H.HtmlColumn("params"), H.HtmlColumn("backend", False, "ascending"), H.HtmlColumn("dtype", False, "ascending"),
          *(H.HtmlColumn(c.title, first="descending" if c.higher_is_better else "ascending") for c in eff)]
    if details:
        hc += [H.HtmlColumn(c.title, first="descending" if c.higher_is_better else "ascending") for c in cols]
    best = [best_labels(entries, c) for c in cols]
    best_eff = [best_efficiency(entries, c) for c in eff]
    body = []
    for r in rows:
        e, m = r.entry, r.entry.model
        row = [H.HtmlCell(r.rank, r.rank.rstrip("=")), H.HtmlCell(e.label, e.label, text_align=True),
               H.HtmlCell(_rate(r.mean_win_rate), _num(r.mean_win_rate)),
               H.HtmlCell(_rate(r.mean_normalized), _num(r.mean_normalized)),
               H.HtmlCell(f"{r.covered}/{r.n_columns}", r.covered), H.HtmlCell(format_params(e.n_params), _num(e.n_params)),
               H.HtmlCell(m.get("backend") or "—", m.get("backend") or "", text_align=True),
               H.HtmlCell(m.get("dtype") or "—", m.get("dtype") or "", text_align=True)]
        for c, b in zip(eff, best_eff):
            v = efficiency_value(e, c)
            row.append(H.HtmlCell(_efficiency_text(r, c), "" if v is None else v, best=e.label in b))
        if details:
            for c, b in zip(cols, best):
                cell = e.cell(c.task, c.metric)
                v = cell.value if cell else None
                row.append(H.HtmlCell(format_value(v), _num(v), format_ci(cell), e.label in b,
                                      f"#{H.anchor_id(e.label, c.task)}" if cell else None))
        body.append(row)
    note = ("Ranked by mean win rate over (task, metric) columns (HELM; ties count half), then by mean min-max "
            "normalized score. — marks a missing value; 2= a shared rank. Click a header to sort; click a value "
            "for its per-sample outputs.")
    if eff:
        note += EFFICIENCY_NOTE + " They do not enter the ranking."
    tasks = list(dict.fromkeys(c.task for c in cols))
    return H.page(title, [f"<p>{H.esc(note)}</p>", H.sortable_table(hc, body, "leaderboard"),
                          H.samples_section(entries, tasks, max_samples=max_samples, link_base=link_base)],
                  subtitle="from " + ", ".join(sorted({str(e.source) for e in entries})))


def _num(x: Any) -> float | str:
    return "" if x is None else x
