"""Plain-text tables of results, as `harness run` and `harness show` print them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    if abs(value) <= 1:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}g}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A fixed-width table; `align` holds 'l' or 'r' per column (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def results_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per (model, task, metric): value, 95% CI, n."""
    rows = []
    for evaluation in results.get("evaluations", []):
        model = evaluation["model"]
        for task_name, task in evaluation.get("tasks", {}).items():
            for metric_name, m in task.get("metrics", {}).items():
                arrow = "↑" if m.get("higher_is_better", True) else "↓"
                ci = (f"[{format_number(m['ci_low'])}, {format_number(m['ci_high'])}]"
                      if m.get("ci_low") is not None else "—")
                rows.append([model.get("spec", model.get("name")), task_name, f"{metric_name} {arrow}",
                             format_number(m.get("value")), ci, str(m.get("n", ""))])
    return rows


def results_table(results: dict[str, Any]) -> str:
    table = text_table(["model", "task", "metric", "value", "95% CI", "n"], results_rows(results), "lllrrr")
    groups = []
    for evaluation in results.get("evaluations", []):
        for group, metrics in evaluation.get("groups", {}).items():
            for metric, m in metrics.items():
                arrow = "↑" if m.get("higher_is_better", True) else "↓"
                groups.append([evaluation["model"].get("spec"), group, f"{metric} {arrow}",
                               format_number(m["value"]), str(len(m["tasks"])), str(m["n"])])
    if groups:
        table += "\n\ngroups (means over member tasks, weighted by documents)\n"
        table += text_table(["model", "group", "metric", "value", "tasks", "n"], groups, "lllrrr")
    return table
