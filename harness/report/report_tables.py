"""`harness report`: models by (task, metric) with 95% CIs, the best in each column marked.

Formats: markdown, CSV and JSON (one record per model, task and metric: the tidy form that
pandas and spreadsheets read), LaTeX (booktabs) and HTML (a self-contained sortable page).
"Best" respects each metric's direction (higher or lower is better); ties mark every tied model.
Results of `harness bench` given beside add efficiency columns (load time, TTFT, tokens/s,
memory: medians over repetitions) after the model, the best of each marked too; in CSV/JSON they
are records of the task "efficiency".
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report import html as H
from harness.report.collect import (Column, ModelEntry, best_labels, format_ci, format_params, format_value,
                                    status_notes)

FORMATS = ("markdown", "csv", "latex", "html", "json")
EFFICIENCY_TASK = "efficiency"  # the task name of efficiency figures in CSV/JSON records

# Figures `harness bench` writes (harness/benchmark/suite.py): title and direction.
EFFICIENCY_FIGURES: dict[str, tuple[str, bool]] = {
    "load_s": ("load s ↓", False),
    "ttft_s": ("TTFT s ↓", False),
    "prefill_tokens_per_s": ("prefill tok/s ↑", True),
    "decode_tokens_per_s": ("decode tok/s ↑", True),
    "batch_decode_tokens_per_s": ("batch decode tok/s ↑", True),
    "batch_requests_per_s": ("batch requests/s ↑", True),
    "peak_memory_mib": ("peak memory MiB ↓", False),
}


def _format_efficiency(value: Any) -> str:
    return format_value(value) if isinstance(value, (int, float)) else str(value)


@dataclass(frozen=True)
class EfficiencyColumn:
    """An extra column read from `ModelEntry.efficiency` (results of `harness bench`).

    `efficiency_columns(entries)` offers one per figure found in the entries; the leaderboard
    and the report show them beside quality (they do not enter the ranking).
    """

    key: str
    title: str
    higher_is_better: bool = True
    fmt: Callable[[Any], str] = field(default=_format_efficiency)


_HIGHER = ("per_s", "per_second", "tok_s", "throughput")
_LOWER = ("seconds", "latency", "memory", "bytes", "_s", "_mb", "_gb", "_mib", "_gib", "time")


def efficiency_columns(entries: Sequence[ModelEntry]) -> list[EfficiencyColumn]:
    """One column per efficiency figure in the entries: the bench figures in their order with
    their titles, then any other figure (rates higher-is-better; times and memory lower)."""
    found = {k for e in entries for k in e.efficiency}
    cols = [EfficiencyColumn(k, title, hib) for k, (title, hib) in EFFICIENCY_FIGURES.items() if k in found]
    for k in dict.fromkeys(k for e in entries for k in e.efficiency):
        if k not in EFFICIENCY_FIGURES:
            higher = any(w in k for w in _HIGHER) or not any(w in k for w in _LOWER)
            cols.append(EfficiencyColumn(k, k.replace("_", " "), higher))
    return cols


def efficiency_value(entry: ModelEntry, col: EfficiencyColumn) -> float | None:
    value = entry.efficiency.get(col.key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best_efficiency(entries: Sequence[ModelEntry], col: EfficiencyColumn) -> set[str]:
    """Labels with the best value of an efficiency figure (none when fewer than two have it)."""
    values = {e.label: v for e in entries if (v := efficiency_value(e, col)) is not None}
    if len(values) < 2:
        return set()
    best = max(values.values()) if col.higher_is_better else min(values.values())
    return {label for label, v in values.items() if math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-15)}


def report_records(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> list[dict[str, Any]]:
    """One record per (model, task, metric) present, with its CI and whether it is the best;
    then one per (model, efficiency figure), under the task "efficiency"."""
    records = []
    for col in cols:
        best = best_labels(entries, col)
        for e in entries:
            cell = e.cell(col.task, col.metric)
            if cell is None:
                continue
            records.append({
                "model": e.label, "spec": e.model.spec, "backend": e.model.backend,
                "n_params": e.n_params, "dtype": e.model.dtype, "task": col.task, "metric": col.metric,
                "filter": col.filter, "value": cell.value, "stderr": cell.stderr, "ci_low": cell.ci_low,
                "ci_high": cell.ci_high, "n": cell.n, "higher_is_better": col.higher_is_better,
                "best": e.label in best, "source": str(e.source), "complete": not e.partial,
            })
    for col in efficiency_columns(entries):
        best = best_efficiency(entries, col)
        for e in entries:
            value = efficiency_value(e, col)
            if value is None:
                continue
            records.append({
                "model": e.label, "spec": e.model.spec, "backend": e.model.backend,
                "n_params": e.n_params, "dtype": e.model.dtype, "task": EFFICIENCY_TASK, "metric": col.key,
                "filter": None, "value": value, "stderr": None, "ci_low": None, "ci_high": None, "n": None,
                "higher_is_better": col.higher_is_better, "best": e.label in best, "source": str(e.source),
                "complete": not e.partial,
            })
    return records


def render_report(entries: Sequence[ModelEntry], cols: Sequence[Column], fmt: str = "markdown", *,
                  ci: bool = True, transpose: bool = False, link_base: Path | None = None,
                  max_samples: int = 25, title: str = "Results") -> str:
    """The report table in one of FORMATS."""
    if fmt == "csv":
        return to_csv(report_records(entries, cols))
    if fmt == "json":
        eff = [{"task": EFFICIENCY_TASK, "metric": c.key, "title": c.title, "higher_is_better": c.higher_is_better}
               for c in efficiency_columns(entries)]
        return json.dumps({"columns": [c.__dict__ for c in cols], "efficiency_columns": eff,
                           "models": [{"label": e.label, **e.model.to_dict(), "source": str(e.source),
                                       "status_note": e.status_note} for e in entries],
                           "records": report_records(entries, cols)}, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return markdown_table(entries, cols, ci=ci, transpose=transpose)
    if fmt == "latex":
        return latex_table(entries, cols, ci=ci, transpose=transpose)
    if fmt == "html":
        return html_report(entries, cols, ci=ci, link_base=link_base, max_samples=max_samples, title=title)
    raise HarnessError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def to_csv(records: Sequence[dict[str, Any]]) -> str:
    if not records:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _grid(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> list[list[tuple[str, str, bool]]]:
    """grid[model][column] = (value text, CI text, best?): the efficiency columns, then `cols`."""
    eff = efficiency_columns(entries)
    best_eff = [best_efficiency(entries, c) for c in eff]
    best = [best_labels(entries, c) for c in cols]
    grid = []
    for e in entries:
        row = []
        for col, b in zip(eff, best_eff):
            value = e.efficiency.get(col.key)
            row.append(("—" if value is None else col.fmt(value), "", e.label in b))
        for col, b in zip(cols, best):
            cell = e.cell(col.task, col.metric)
            row.append((format_value(cell.value if cell else None), format_ci(cell), e.label in b))
        grid.append(row)
    return grid


def md_escape(text: Any) -> str:
    """Text safe inside a markdown table cell: pipes, emphasis and raw HTML neutralized."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("`", "\\`")
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def markdown_table(entries: Sequence[ModelEntry], cols: Sequence[Column], *, ci: bool = True,
                   transpose: bool = False) -> str:
    grid = _grid(entries, cols)

    def cell(v: tuple[str, str, bool]) -> str:
        text = f"**{v[0]}**" if v[2] else v[0]
        return f"{text} {v[1]}" if ci and v[1] else text

    eff = efficiency_columns(entries)
    if transpose:
        header = ["task", "metric", *(md_escape(e.label) for e in entries)]
        names = [(EFFICIENCY_TASK, md_escape(c.title)) for c in eff] + \
            [(md_escape(c.task), f"{md_escape(c.metric)} {c.arrow}") for c in cols]
        body = [[task, metric, *(cell(grid[i][j]) for i in range(len(entries)))]
                for j, (task, metric) in enumerate(names)]
        align = ["---", "---", *["---:"] * len(entries)]
    else:
        header = ["model", *(md_escape(c.title) for c in eff), *(md_escape(c.title) for c in cols)]
        body = [[md_escape(e.label), *(cell(v) for v in row)] for e, row in zip(entries, grid)]
        align = ["---", *["---:"] * (len(eff) + len(cols))]
    lines = ["| " + " | ".join(r) + " |" for r in (header, align, *body)]
    note = "Values with bootstrap 95% CIs; **bold**: best in its " + ("row" if transpose else "column") + \
        " (↑ higher is better, ↓ lower is better)."
    if eff:
        note += EFFICIENCY_NOTE
    note += "".join(f"\n\nWarning: not a complete run: {md_escape(n)}" for n in status_notes(entries))
    return "\n".join(lines) + "\n\n" + note + "\n"


EFFICIENCY_NOTE = (" Efficiency figures from `harness bench`: medians over repetitions, TTFT/prefill/decode for one"
                   " request of the shortest prompt, batch figures for the largest batch; peak memory is resident"
                   " memory on CPU, allocated memory on GPU.")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(entries: Sequence[ModelEntry], cols: Sequence[Column], *, ci: bool = True,
                transpose: bool = False) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); arrows as $\\uparrow$/$\\downarrow$."""
    grid = _grid(entries, cols)

    def cell(v: tuple[str, str, bool]) -> str:
        text = v[0].replace("—", "--")
        text = f"\\textbf{{{text}}}" if v[2] else text
        return f"{text} {{\\scriptsize {latex_escape(v[1])}}}" if ci and v[1] else text

    def arrow(c: Column) -> str:
        return r"$\uparrow$" if c.higher_is_better else r"$\downarrow$"

    eff = efficiency_columns(entries)

    def eff_title(c: EfficiencyColumn) -> str:
        return latex_escape(c.title.rstrip(" ↑↓")) + " " + (r"$\uparrow$" if c.higher_is_better else r"$\downarrow$")

    if transpose:
        header = ["Task", "Metric", *(latex_escape(e.label) for e in entries)]
        names = [(EFFICIENCY_TASK, eff_title(c)) for c in eff] + \
            [(latex_escape(c.task), f"{latex_escape(c.metric)} {arrow(c)}") for c in cols]
        body = [[task, metric, *(cell(grid[i][j]) for i in range(len(entries)))]
                for j, (task, metric) in enumerate(names)]
        spec = "ll" + "r" * len(entries)
    else:
        header = ["Model", *(eff_title(c) for c in eff),
                  *(f"{latex_escape(c.task)} / {latex_escape(c.metric)} {arrow(c)}" for c in cols)]
        body = [[latex_escape(e.label), *(cell(v) for v in row)] for e, row in zip(entries, grid)]
        spec = "l" + "r" * (len(eff) + len(cols))
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule",
             *(" & ".join(r) + r" \\" for r in body), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def html_report(entries: Sequence[ModelEntry], cols: Sequence[Column], *, ci: bool = True,
                link_base: Path | None = None, max_samples: int = 25, title: str = "Results") -> str:
    """A self-contained page: the report table (sortable) and the per-sample outputs it links to."""
    eff = efficiency_columns(entries)
    hcols = [H.HtmlColumn("model", numeric=False, first="ascending"),
             H.HtmlColumn("params", first="descending")]
    hcols += [H.HtmlColumn(c.title, first="descending" if c.higher_is_better else "ascending") for c in eff]
    hcols += [H.HtmlColumn(c.title, first="descending" if c.higher_is_better else "ascending") for c in cols]
    best = [best_labels(entries, col) for col in cols]
    best_eff = [best_efficiency(entries, c) for c in eff]
    rows = []
    for e in entries:
        row = [H.HtmlCell(e.label, e.label, text_align=True), H.HtmlCell(format_params(e.n_params), e.n_params or "")]
        for col, b in zip(eff, best_eff):
            value = efficiency_value(e, col)
            row.append(H.HtmlCell("—" if value is None else col.fmt(value), "" if value is None else value,
                                  best=e.label in b))
        for col, b in zip(cols, best):
            cell = e.cell(col.task, col.metric)
            value = cell.value if cell else None
            row.append(H.HtmlCell(format_value(value), "" if value is None else value,
                                  format_ci(cell) if ci else "", e.label in b,
                                  f"#{H.anchor_id(e.label, col.task)}" if cell else None))
        rows.append(row)
    tasks = list(dict.fromkeys(c.task for c in cols))
    note = "Click a column header to sort. Bold: best in its column; bracketed: bootstrap 95% CI."
    if eff:
        note += EFFICIENCY_NOTE
    partial = "".join(f"<p><strong>Not a complete run:</strong> {H.esc(n)}</p>" for n in status_notes(entries))
    return H.page(title, [f"<p>{H.esc(note)}</p>{partial}", H.sortable_table(hcols, rows, "report"),
                          H.samples_section(entries, tasks, max_samples=max_samples, link_base=link_base)],
                  subtitle="from " + ", ".join(sorted({str(e.source) for e in entries})))
