"""Results files -> one flat list of model entries and (task, metric) columns, for every report.

A results file may hold several models (evaluations[]) and several files may be given; each
(file, evaluation) becomes one `ModelEntry` with a unique label. Everything downstream (tables,
leaderboard, plots, HTML) reads entries and columns, never the raw JSON.
"""

from __future__ import annotations

import fnmatch
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.text_tables import format_number
from harness.results import MetricResult, ModelRecord, RunResults, TaskResult, atomic_write_text, load_results


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
    def from_record(cls, m: MetricResult) -> Cell:
        return cls(_num(m.value), _num(m.ci_low), _num(m.ci_high), _num(m.stderr), m.n, m.higher_is_better)


@dataclass
class ModelEntry:
    """One model's evaluation from one results file."""

    label: str  # unique among the entries of one report
    model: ModelRecord
    tasks: dict[str, TaskResult]
    source: Path  # the results file; samples_file paths are relative to its folder
    efficiency: dict[str, Any] = field(default_factory=dict)  # `harness bench` figures, when present
    status_note: str | None = None  # set when the results file is not a complete run

    def metric(self, task: str, metric: str) -> MetricResult | None:
        """The metric under its key (`name`, or `name[filter]`) in `task`, if present."""
        record = self.tasks.get(task)
        return None if record is None else record.metrics.get(metric)

    def cell(self, task: str, metric: str) -> Cell | None:
        m = self.metric(task, metric)
        return None if m is None else Cell.from_record(m)

    def samples_path(self, task: str) -> Path | None:
        """The task's per-sample file; None when there is none or it would lie outside the
        results file's folder (a results file must not make a report read arbitrary files)."""
        record = self.tasks.get(task)
        return None if record is None else record.samples_path(self.source.parent)

    @property
    def n_params(self) -> int | None:
        return self.model.n_params

    @property
    def partial(self) -> bool:
        return self.status_note is not None


@dataclass(frozen=True)
class Column:
    """One (task, metric) of a report; `metric` is the metric's key in the task (its name, or
    `name[filter]` for a metric scored under a response filter), `filter` that filter."""

    task: str
    metric: str
    higher_is_better: bool = True
    filter: str | None = None

    @property
    def name(self) -> str:
        """The metric's name without its filter."""
        return self.metric.removesuffix(f"[{self.filter}]") if self.filter is not None else self.metric

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


def model_label(model: ModelRecord) -> str:
    return model.label


def load_entries(paths: Iterable[str | Path], *, warn: bool = True) -> list[ModelEntry]:
    """Every (file, evaluation) as a ModelEntry; labels made unique with the file name where needed.
    A file that is not a complete run is said on stderr (warn=True) and marks its entries partial."""
    entries: list[ModelEntry] = []
    benchmarks: list[tuple[RunResults, Any]] = []
    for path in paths:
        path = Path(path)
        data = load_results(path)
        note = data.status_note()
        if note and warn:
            print(f"warning: {note}", file=sys.stderr)
        for evaluation in data.evaluations:
            if data.kind == "benchmark":
                benchmarks.append((data, evaluation))
                continue
            entries.append(ModelEntry(evaluation.model.label, evaluation.model, evaluation.tasks, path,
                                      dict(evaluation.efficiency), note))
    for data, evaluation in benchmarks:
        attach_efficiency(entries, evaluation, data.path, data.status_note())
    if not entries:
        raise HarnessError("no evaluations in the given results files")
    _disambiguate(entries)
    return entries


def attach_efficiency(entries: list[ModelEntry], evaluation: Any, path: Path, note: str | None = None) -> None:
    """The hook for `harness bench` results (kind "benchmark"): each evaluation's `efficiency`
    figures ({name: number}) join the entry of the same model spec, or a new entry without scores."""
    figures = dict(evaluation.efficiency)
    same = [e for e in entries if e.model.spec == evaluation.model.spec]
    for e in same:
        e.efficiency.update(figures)
    if not same:
        entries.append(ModelEntry(evaluation.model.label, evaluation.model, {}, path, figures, note))


def status_notes(entries: Sequence[ModelEntry]) -> list[str]:
    """The distinct notes of entries from results files that are not complete runs."""
    return list(dict.fromkeys(e.status_note for e in entries if e.status_note))


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
    found: dict[tuple[str, str], MetricResult] = {}
    for e in entries:
        for task, record in e.tasks.items():
            for key, m in record.metrics.items():
                found.setdefault((task, key), m)
    cols = [Column(t, key, m.higher_is_better, m.filter) for (t, key), m in found.items()
            if _matches(t, tasks) and (_matches(key, metrics) or _matches(m.name, metrics))]
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
