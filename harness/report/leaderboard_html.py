"""The HTML leaderboard: a compact first screen (model, rank, size, mean win rate, each task's
primary score with its CI); the normalized score, every metric, the efficiency figures and the
per-sample outputs a click away.

Self-contained: no CDN, no server; sortable headers; the header row and the model column stay in
view while scrolling. Every text from a results file is escaped (html.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.report import html as H
from harness.report.collect import Column, ModelEntry, format_params, format_value, status_notes
from harness.report.leaderboard import Ranking, rate
from harness.report.ranking import best_labels
from harness.report.report_tables import EFFICIENCY_NOTE, EfficiencyColumn, best_efficiency, efficiency_value


def _first(c: Column) -> str:
    return "descending" if c.higher_is_better else "ascending"


def _num(x: Any) -> float | str:
    return "" if x is None else x


def _score_cell(e: ModelEntry, c: Column, best: bool, with_link: bool = True) -> H.HtmlCell:
    cell = e.cell(c.task, c.metric)
    v = cell.value if cell else None
    href = f"#{H.anchor_id(e.label, c.task)}" if cell is not None and with_link else None
    ci = "" if cell is None or cell.ci_low is None or cell.ci_high is None else f"{cell.ci_low:.3g}–{cell.ci_high:.3g}"
    return H.HtmlCell(format_value(v), _num(v), ci, best, href)


def render_html(ranking: Ranking, entries: Sequence[ModelEntry], cols: Sequence[Column], eff: list[EfficiencyColumn],
                details: bool, link_base: Path | None, max_samples: int, title: str) -> str:
    """The whole page."""
    reps = [r.entry for r in ranking.rows]
    ranked = set(ranking.ranked)
    best = {c: best_labels(reps, c) if c in ranked else set() for c in cols}
    head = [H.HtmlColumn("model", False, "ascending"), H.HtmlColumn("rank", first="ascending"),
            H.HtmlColumn("params"), H.HtmlColumn("mean\nwin rate")]
    head += [H.HtmlColumn(f"{c.task}\n{c.metric} {c.arrow}", first=_first(c), classes="" if c in ranked else "unranked",
                          note="" if c in ranked else _reason(ranking, c)) for c in ranking.headline]
    body = []
    for r in ranking.rows:
        e = r.entry
        others = [v.label for v in r.group.variants[1:] if v.tasks]
        row = [H.HtmlCell(e.label, e.label, "also " + ", ".join(others) if others else "", text_align=True),
               H.HtmlCell(r.rank, r.rank.rstrip("=")), H.HtmlCell(format_params(e.n_params), _num(e.n_params)),
               H.HtmlCell(rate(r.mean_win_rate), _num(r.mean_win_rate))]
        row += [_score_cell(e, c, e.label in best[c]) for c in ranking.headline]
        body.append(row)
    sections = [f'<p class="note">{H.esc(_short_method(ranking))} <a href="#method">Method</a>. '
                "Click a header to sort, a score for its samples.</p>",
                H.sortable_table(head, body, "leaderboard", sticky_first=True, compact=True)]
    if details:
        sections.append(_details(ranking, cols, eff, best))
    sections.append(f'<details id="method"><summary>Method</summary><p class="note">{H.esc(ranking.method())}</p>'
                    f"{_unranked_list(ranking)}</details>")
    sections += [f"<p><strong>Not a complete run:</strong> {H.esc(n)}</p>" for n in status_notes(entries)]
    tasks = list(dict.fromkeys(c.task for c in cols))
    sections.append(H.samples_section(entries, tasks, max_samples=max_samples, link_base=link_base))
    return H.page(title, sections, subtitle="from " + ", ".join(sorted({e.source.name for e in entries})))


def _short_method(ranking: Ranking) -> str:
    on = "each task's primary metric" if ranking.rank_on == "primary" else "every comparable metric"
    return (f"Ranked by mean win rate over {on} ({len(ranking.ranked)} columns); differences inside the 95% CIs "
            "(small grey ranges) are ties. Bold: best, or indistinguishable from it.")


def _reason(ranking: Ranking, c: Column) -> str:
    return next((f"not ranked: {s.reason}" for s in ranking.statuses if s.column == c and not s.ranked), "")


def _unranked_list(ranking: Ranking) -> str:
    items = [f"<li>{H.esc(s.column.task)} / {H.esc(s.column.metric)}: {H.esc(s.reason)}</li>"
             for s in ranking.statuses if not s.ranked and s.reason != "not a primary metric"]
    return f"<p>Shown, not ranked:</p><ul>{''.join(items)}</ul>" if items else ""


def _details(ranking: Ranking, cols: Sequence[Column], eff: list[EfficiencyColumn], best: dict[Column, set[str]]) -> str:
    """Every metric and efficiency figure, one row per entry (backend variants on their own rows)."""
    ranked = set(ranking.ranked)
    variants = [(r, v) for r in ranking.rows for v in r.group.variants]
    best_eff = [best_efficiency([v for _, v in variants], c) for c in eff]
    head = [H.HtmlColumn("model", False, "ascending"), H.HtmlColumn("rank", first="ascending"),
            H.HtmlColumn("mean win rate"), H.HtmlColumn("mean normalized"),
            H.HtmlColumn("backend", False, "ascending"), H.HtmlColumn("dtype", False, "ascending")]
    head += [H.HtmlColumn(c.title, first=_first(c)) for c in eff]
    head += [H.HtmlColumn(c.title, first=_first(c), classes="" if c in ranked else "unranked",
                          note="" if c in ranked else _reason(ranking, c)) for c in cols]
    body = []
    for r, v in variants:
        m = v.model
        row = [H.HtmlCell(v.label, v.label, text_align=True), H.HtmlCell(r.rank, r.rank.rstrip("=")),
               H.HtmlCell(rate(r.mean_win_rate), _num(r.mean_win_rate)),
               H.HtmlCell(rate(r.mean_normalized), _num(r.mean_normalized)),
               H.HtmlCell(m.get("backend") or "—", m.get("backend") or "", text_align=True),
               H.HtmlCell(m.get("dtype") or "—", m.get("dtype") or "", text_align=True)]
        for c, b in zip(eff, best_eff):
            x = efficiency_value(v, c)
            row.append(H.HtmlCell("—" if x is None else c.fmt(x), _num(x), best=v.label in b))
        row += [_score_cell(v, c, v is r.entry and v.label in best[c]) for c in cols]
        body.append(row)
    note = "Italic headers are shown but not ranked (hover for why)."
    if eff:
        note += EFFICIENCY_NOTE + " They do not enter the ranking."
    return (f'<details id="all-metrics"><summary>All metrics ({len(cols)} columns'
            f"{', efficiency' if eff else ''}, every backend)</summary><p class=\"note\">{H.esc(note)}</p>"
            f"{H.sortable_table(head, body, 'details', sticky_first=True)}</details>")
