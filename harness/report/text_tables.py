"""Plain-text tables of results, as `harness run` and `harness show` print them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.results import RunResults


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


def results_rows(results: RunResults) -> list[list[str]]:
    """One row per (model, task, metric): value, 95% CI, n."""
    rows = []
    for evaluation, task in results.tasks():
        for m in task.metrics.values():
            arrow = "↑" if m.higher_is_better else "↓"
            ci = f"[{format_number(m.ci_low)}, {format_number(m.ci_high)}]" if m.ci_low is not None else "—"
            rows.append([evaluation.model.label, task.name, f"{m.key} {arrow}", format_number(m.value), ci,
                         "" if m.n is None else str(m.n)])
    return rows


def results_table(results: RunResults) -> str:
    """The table `harness run` and `harness show` print; a run that is not complete says so first."""
    table = text_table(["model", "task", "metric", "value", "95% CI", "n"], results_rows(results), "lllrrr")
    groups = []
    for evaluation in results.evaluations:
        for group in evaluation.groups.values():
            for m in group.metrics.values():
                arrow = "↑" if m.higher_is_better else "↓"
                ci = f"[{format_number(m.ci_low)}, {format_number(m.ci_high)}]" if m.ci_low is not None else "—"
                groups.append([evaluation.model.label, group.name, f"{m.key} {arrow}",
                               format_number(m.value), ci, str(len(m.tasks)), str(m.n)])
    if groups:
        table += "\n\ngroups (alike member tasks pooled; a group file's aggregate_metric_list as lm-eval computes it)\n"
        table += text_table(["model", "group", "metric", "value", "95% CI", "tasks", "n"], groups, "lllrrrr")
    skipped = sorted({f"{group}: {metric}" for e in results.evaluations
                      for group, metrics in (e.other.get("group_notes") or {}).items() for metric in metrics})
    if skipped:
        table += ("\n\nno group value (members measure it differently; see group_notes in the results file): "
                  + ", ".join(skipped))
    note = results.status_note()
    return f"{note}\n\n{table}" if note else table
