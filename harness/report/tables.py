"""`harness report`: models by (task, metric) with 95% CIs, the best in each column marked.

Formats: markdown, CSV and JSON (one record per model, task and metric: the tidy form that
pandas and spreadsheets read), LaTeX (booktabs) and HTML (a self-contained sortable page).
"Best" respects each metric's direction (higher or lower is better); ties mark every tied model.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report import html as H
from harness.report.collect import Column, ModelEntry, best_labels, format_ci, format_params, format_value

FORMATS = ("markdown", "csv", "latex", "html", "json")


def report_records(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> list[dict[str, Any]]:
    """One record per (model, task, metric) present, with its CI and whether it is the best."""
    records = []
    for col in cols:
        best = best_labels(entries, col)
        for e in entries:
            cell = e.cell(col.task, col.metric)
            if cell is None:
                continue
            records.append({
                "model": e.label, "spec": e.model.get("spec"), "backend": e.model.get("backend"),
                "n_params": e.n_params, "dtype": e.model.get("dtype"), "task": col.task, "metric": col.metric,
                "value": cell.value, "stderr": cell.stderr, "ci_low": cell.ci_low, "ci_high": cell.ci_high,
                "n": cell.n, "higher_is_better": col.higher_is_better, "best": e.label in best,
                "source": str(e.source),
            })
    return records


def render_report(entries: Sequence[ModelEntry], cols: Sequence[Column], fmt: str = "markdown", *,
                  ci: bool = True, transpose: bool = False, link_base: Path | None = None,
                  max_samples: int = 25, title: str = "Results") -> str:
    """The report table in one of FORMATS."""
    if fmt == "csv":
        return to_csv(report_records(entries, cols))
    if fmt == "json":
        return json.dumps({"columns": [c.__dict__ for c in cols],
                           "models": [{"label": e.label, **e.model, "source": str(e.source)} for e in entries],
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
    """grid[model][column] = (value text, CI text, best?)."""
    best = [best_labels(entries, c) for c in cols]
    grid = []
    for e in entries:
        row = []
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

    if transpose:
        header = ["task", "metric", *(md_escape(e.label) for e in entries)]
        body = [[md_escape(c.task), f"{md_escape(c.metric)} {c.arrow}", *(cell(grid[i][j]) for i in range(len(entries)))]
                for j, c in enumerate(cols)]
        align = ["---", "---", *["---:"] * len(entries)]
    else:
        header = ["model", *(md_escape(c.title) for c in cols)]
        body = [[md_escape(e.label), *(cell(v) for v in row)] for e, row in zip(entries, grid)]
        align = ["---", *["---:"] * len(cols)]
    lines = ["| " + " | ".join(r) + " |" for r in (header, align, *body)]
    note = "Values with bootstrap 95% CIs; **bold**: best in its " + ("row" if transpose else "column") + \
        " (↑ higher is better, ↓ lower is better)."
    return "\n".join(lines) + "\n\n" + note + "\n"


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

    if transpose:
        header = ["Task", "Metric", *(latex_escape(e.label) for e in entries)]
        body = [[latex_escape(c.task), f"{latex_escape(c.metric)} {arrow(c)}", *(cell(grid[i][j]) for i in range(len(entries)))]
                for j, c in enumerate(cols)]
        spec = "ll" + "r" * len(entries)
    else:
        header = ["Model", *(f"{latex_escape(c.task)} / {latex_escape(c.metric)} {arrow(c)}" for c in cols)]
        body = [[latex_escape(e.label), *(cell(v) for v in row)] for e, row in zip(entries, grid)]
        spec = "l" + "r" * len(cols)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule",
             *(" & ".join(r) + r" \\" for r in body), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def html_report(entries: Sequence[ModelEntry], cols: Sequence[Column], *, ci: bool = True,
                link_base: Path | None = None, max_samples: int = 25, title: str = "Results") -> str:
    """A self-contained page: the report table (sortable) and the per-sample outputs it links to."""
    hcols = [H.HtmlColumn("model", numeric=False, first="ascending"),
             H.HtmlColumn("params", first="descending")]
    hcols += [H.HtmlColumn(c.title, first="descending" if c.higher_is_better else "ascending") for c in cols]
    best = [best_labels(entries, col) for col in cols]
    rows = []
    for e in entries:
        row = [H.HtmlCell(e.label, e.label, text_align=True), H.HtmlCell(format_params(e.n_params), e.n_params or "")]
        for col, b in zip(cols, best):
            cell = e.cell(col.task, col.metric)
            value = cell.value if cell else None
            row.append(H.HtmlCell(format_value(value), "" if value is None else value,
                                  format_ci(cell) if ci else "", e.label in b,
                                  f"#{H.anchor_id(e.label, col.task)}" if cell else None))
        rows.append(row)
    tasks = list(dict.fromkeys(c.task for c in cols))
    note = "Click a column header to sort. Bold: best in its column; bracketed: bootstrap 95% CI."
    return H.page(title, [f"<p>{H.esc(note)}</p>", H.sortable_table(hcols, rows, "report"),
                          H.samples_section(entries, tasks, max_samples=max_samples, link_base=link_base)],
                  subtitle="from " + ", ".join(sorted({str(e.source) for e in entries})))
