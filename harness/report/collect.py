"""Results files -> one flat list of model entries and (task, metric) columns, for every report.

A results file may hold several models (evaluations[]) and several files may be given; each
(file, evaluation) becomes one `ModelEntry` with a unique label. Everything downstream (tables,
leaderboard, plots, HTML) reads entries and columns, never the raw JSON.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.table import format_number
from harness.results import atomic_write_text, load_results


@dataclass
class Cell:
    """One model's value of one (task, metric), with its bootstrap 95% CI."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    stderr: float | None = None
    n: int | None = None
    higher_is_better: bool = True

    @classmethod
    def from_record(cls, m: dict[str, Any]) -> Cell:
        return cls(_num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high")), _num(m.get("stderr")),
                   m.get("n"), bool(m.get("higher_is_better", True)))


@dataclass
class ModelEntry:
    """One model's evaluation from one results file."""

    label: str  # unique among the entries of one report
    model: dict[str, Any]
    tasks: dict[str, Any]
    source: Path  # the results file; samples_file paths are relative to its folder
    efficiency: dict[str, Any] = field(default_factory=dict)  # `harness bench` figures, when present

    def cell(self, task: str, metric: str) -> Cell | None:
        m = self.tasks.get(task, {}).get("metrics", {}).get(metric)
        return None if m is None else Cell.from_record(m)

    def samples_path(self, task: str) -> Path | None:
        rel = self.tasks.get(task, {}).get("samples_file")
        return None if not rel else self.source.parent / rel

    @property
    def n_params(self) -> int | None:
        return self.model.get("n_params")


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    higher_is_better: bool = True

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def title(self) -> str:
        return f"{self.task} / {self.metric} {self.arrow}"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def model_label(model: dict[str, Any]) -> str:
    return str(model.get("spec") or model.get("name") or "?")


def load_entries(paths: Iterable[str | Path]) -> list[ModelEntry]:
    """Every (file, evaluation) as a ModelEntry; labels made unique with the file name where needed."""
    entries: list[ModelEntry] = []
    benchmarks: list[tuple[dict[str, Any], Path]] = []
    for path in paths:
        path = Path(path)
        data = load_results(path)
        for evaluation in data["evaluations"]:
            if data.get("kind") == "benchmark":
                benchmarks.append((evaluation, path))
                continue
            model = evaluation.get("model", {})
            entries.append(ModelEntry(model_label(model), model, evaluation.get("tasks", {}), path,
                                      dict(evaluation.get("efficiency") or {})))
    for evaluation, path in benchmarks:
        attach_efficiency(entries, evaluation, path)
    if not entries:
        raise HarnessError("no evaluations in the given results files")
    _disambiguate(entries)
    return entries


def attach_efficiency(entries: list[ModelEntry], evaluation: dict[str, Any], path: Path) -> None:
    """The hook for `harness bench` results (kind "benchmark"): each evaluation's `efficiency`
    figures ({name: number}) join the entry of the same model spec, or a new entry without scores."""
    model = evaluation.get("model", {})
    figures = dict(evaluation.get("efficiency") or {})
    same = [e for e in entries if e.model.get("spec") == model.get("spec")]
    for e in same:
        e.efficiency.update(figures)
    if not same:
        entries.append(ModelEntry(model_label(model), model, {}, path, figures))


def _disambiguate(entries: list[ModelEntry]) -> None:
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.label] = counts.get(e.label, 0) + 1
    seen: dict[str, int] = {}
    for e in entries:
        if counts[e.label] > 1:
            base = f"{e.label} ({e.source.stem})"
            seen[base] = seen.get(base, 0) + 1
            e.label = base if seen[base] == 1 else f"{base} #{seen[base]}"


def columns(entries: Sequence[ModelEntry], tasks: Sequence[str] | None = None,
            metrics: Sequence[str] | None = None) -> list[Column]:
    """The (task, metric) columns in first-seen order, filtered by task/metric names or globs."""
    found: dict[tuple[str, str], bool] = {}
    for e in entries:
        for task, record in e.tasks.items():
            for metric, m in record.get("metrics", {}).items():
                found.setdefault((task, metric), bool(m.get("higher_is_better", True)))
    cols = [Column(t, m, hib) for (t, m), hib in found.items()
            if _matches(t, tasks) and _matches(m, metrics)]
    if not cols:
        wanted = ", ".join([*(tasks or []), *(metrics or [])]) or "any"
        raise HarnessError(f"no (task, metric) in the results matches {wanted}; "
                           f"tasks present: {', '.join(sorted({t for t, _ in found})) or 'none'}")
    return cols


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def best_labels(entries: Sequence[ModelEntry], column: Column) -> set[str]:
    """Labels of the models with the best value in this column (all of them on a tie)."""
    values = {e.label: c.value for e in entries if (c := e.cell(column.task, column.metric)) and c.value is not None}
    if len(values) < 2:
        return set()
    best = max(values.values()) if column.higher_is_better else min(values.values())
    return {label for label, v in values.items() if math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-15)}


def format_value(value: float | None, digits: int = 4) -> str:
    """Numbers for tables: 4 significant figures, fixed 4 decimals in [-1, 1], '—' when missing."""
    return format_number(value, digits)


def format_ci(cell: Cell | None) -> str:
    if cell is None or cell.ci_low is None or cell.ci_high is None:
        return ""
    return f"[{format_value(cell.ci_low)}, {format_value(cell.ci_high)}]"


def format_params(n: int | None) -> str:
    if not n:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def write_output(path: str | Path, text: str) -> Path:
    """Write a report atomically, readable by others (a page to publish, unlike the 0600 temp file)."""
    path = Path(path)
    atomic_write_text(path, text)
    os.chmod(path, 0o644)
    return path
