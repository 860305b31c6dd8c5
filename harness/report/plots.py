"""Plots (matplotlib, PNG and SVG): score against parameter count, and grouped bars per task.

- size: one panel per (task, metric); x = parameter count (log scale), y = value with its 95% CI
  as error bars; one marker per backend, points labelled by model. The model-size comparison.
- bars: one panel per metric; groups = the tasks reporting that metric, one bar per model with
  its 95% CI; the same model has the same colour in every panel.
Output is deterministic (no timestamps, fixed SVG ids), so regenerated plots diff cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.report.collect import Column, ModelEntry

KINDS = ("size", "bars")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "harness", "svg.fonttype": "none", "font.size": 9})
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: int = 3) -> tuple[int, int]:
    cols = min(width, n)
    return math.ceil(n / cols), cols


def _errors(value: float, low: float | None, high: float | None) -> tuple[float, float]:
    if low is None or high is None:
        return 0.0, 0.0
    return max(0.0, value - low), max(0.0, high - value)


def size_figure(entries: Sequence[ModelEntry], cols: Sequence[Column]):
    """Score against parameter count, one panel per (task, metric)."""
    plt = _pyplot()
    sized = [e for e in entries if e.n_params]
    if not sized:
        raise HarnessError("no model in the results records its parameter count; the size plot needs n_params")
    backends = list(dict.fromkeys(str(e.model.get("backend") or "?") for e in sized))
    colors = _colors(plt, [e.label for e in entries])
    nrows, ncols = _grid(len(cols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        for e in sized:
            cell = e.cell(col.task, col.metric)
            if cell is None or cell.value is None:
                continue
            backend = str(e.model.get("backend") or "?")
            lo, hi = _errors(cell.value, cell.ci_low, cell.ci_high)
            ax.errorbar([e.n_params], [cell.value], yerr=[[lo], [hi]], fmt=MARKERS[backends.index(backend) % len(MARKERS)],
                        color=colors[e.label], capsize=3, label=e.label)
            ax.annotate(e.model.get("name") or e.label, (e.n_params, cell.value), textcoords="offset points",
                        xytext=(5, 4), fontsize=7)
        _params_axis(ax, [e.n_params for e in sized])
        ax.set_title(f"{col.task}", fontsize=9)
        ax.set_ylabel(f"{col.metric} {col.arrow}")
        ax.set_xlabel("parameters")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.set_visible(False)
    _legend(fig, axes)
    fig.suptitle("Score against parameter count (bars: 95% CI)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def bars_figure(entries: Sequence[ModelEntry], cols: Sequence[Column]):
    """Grouped bars: one panel per metric, groups = tasks, bars = models, with 95% CIs."""
    plt = _pyplot()
    metrics = list(dict.fromkeys(c.metric for c in cols))
    colors = _colors(plt, [e.label for e in entries])
    nrows, ncols = _grid(len(metrics), 2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 3.4 * nrows), squeeze=False)
    width = 0.8 / max(1, len(entries))
    for ax, metric in zip(axes.flat, metrics):
        mcols = [c for c in cols if c.metric == metric]
        for i, e in enumerate(entries):
            xs, ys, errs = [], [], [[], []]
            for j, col in enumerate(mcols):
                cell = e.cell(col.task, col.metric)
                if cell is None or cell.value is None:
                    continue
                lo, hi = _errors(cell.value, cell.ci_low, cell.ci_high)
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(cell.value)
                errs[0].append(lo)
                errs[1].append(hi)
            if xs:
                ax.bar(xs, ys, width, yerr=errs, capsize=2, color=colors[e.label], label=e.label)
        ax.set_xticks(range(len(mcols)), [c.task for c in mcols], rotation=20, ha="right")
        ax.set_ylabel(f"{metric} {mcols[0].arrow}")
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    _legend(fig, axes)
    fig.suptitle("Scores per task (bars: 95% CI)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def _params_axis(ax, sizes: Sequence[int]) -> None:
    """Log-scaled parameter axis, at least a decade wide, ticks labelled 100M, 1B, ..."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from harness.report.collect import format_params

    lo, hi = min(sizes), max(sizes)
    ax.set_xscale("log")
    ax.set_xlim(lo / 10 ** 0.5 if hi / lo < 10 else lo / 1.5, hi * 10 ** 0.5 if hi / lo < 10 else hi * 1.5)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_params(round(x))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _colors(plt, labels: Sequence[str]) -> dict[str, object]:
    cycle = plt.get_cmap("tab10")
    return {label: cycle(i % 10) for i, label in enumerate(labels)}


def _legend(fig, axes) -> None:
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=7, frameon=False)


def save_plots(entries: Sequence[ModelEntry], cols: Sequence[Column], out_dir: str | Path,
               kinds: Sequence[str] = KINDS, formats: Sequence[str] = ("png", "svg"), prefix: str = "") -> list[Path]:
    """Write each plot kind in each format to out_dir/<prefix><kind>.<format>; returns the paths."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        if kind not in KINDS:
            raise HarnessError(f"unknown plot kind {kind!r}; choose from {', '.join(KINDS)}")
        fig = size_figure(entries, cols) if kind == "size" else bars_figure(entries, cols)
        for fmt in formats:
            if fmt not in ("png", "svg"):
                raise HarnessError(f"unknown image format {fmt!r}; choose png or svg")
            path = out_dir / f"{prefix}{kind}.{fmt}"
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(path, dpi=150, metadata=metadata)
            written.append(path)
        plt.close(fig)
    return written
