"""Plots (matplotlib, PNG and SVG): score against parameter count, and grouped bars per task.

- size: one panel per (task, metric); x = parameter count (log scale), y = value with its 95% CI
  as error bars; one marker per backend, points labelled by model. The model-size comparison.
- bars: one panel per metric; groups = the tasks reporting that metric, one bar per model with
  its 95% CI; the same model has the same colour in every panel.
- efficiency: quality against decode speed and against peak memory (results of `harness bench`
  beside those of `harness run`), one point per model and backend, the Pareto front marked
  (filled points joined by a line: no other point is both better and faster / smaller). Quality is
  the one (task, metric) selected, with its CI, or else the mean normalized score over all of them.
Output is deterministic (no timestamps, fixed SVG ids), so regenerated plots diff cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.report.collect import Column, ModelEntry

KINDS = ("size", "bars", "efficiency")
SPEED_FIGURE, MEMORY_FIGURE = "decode_tokens_per_s", "peak_memory_mib"
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


def quality_points(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> tuple[dict[str, tuple], str, bool]:
    """Per label (value, ci_low, ci_high), the axis title and whether higher is better: the single
    column's values, or the mean normalized score (0-1, best 1) over several columns."""
    if len(cols) == 1:
        col = cols[0]
        points = {e.label: (c.value, c.ci_low, c.ci_high) for e in entries
                  if (c := e.cell(col.task, col.metric)) is not None and c.value is not None}
        return points, f"{col.task} / {col.metric} {col.arrow}", col.higher_is_better
    from harness.report.leaderboard import normalized_scores

    per: dict[str, list[float]] = {}
    for col in cols:
        for label, score in normalized_scores(entries, col).items():
            per.setdefault(label, []).append(score)
    points = {label: (sum(v) / len(v), None, None) for label, v in per.items()}
    return points, f"mean normalized score over {len(cols)} columns ↑", True


def pareto_front(points: Sequence[tuple[float, float]], x_higher: bool, y_higher: bool) -> list[int]:
    """Indices of the points no other point dominates (at least as good on both axes, better on one)."""
    def better_eq(a: float, b: float, higher: bool) -> bool:
        return a >= b if higher else a <= b

    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(better_eq(ox, x, x_higher) and better_eq(oy, y, y_higher) and (ox, oy) != (x, y)
                        for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def efficiency_plottable(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> bool:
    quality, _, _ = quality_points(entries, cols)
    return any(e.label in quality and (e.efficiency.get(SPEED_FIGURE) or e.efficiency.get(MEMORY_FIGURE))
               for e in entries)


def efficiency_figure(entries: Sequence[ModelEntry], cols: Sequence[Column]):
    """Quality against decode tokens/s and against peak memory, the Pareto front marked."""
    plt = _pyplot()
    quality, ylabel, y_higher = quality_points(entries, cols)
    if not efficiency_plottable(entries, cols):
        raise HarnessError("the efficiency plot needs, for the same model spec, quality results (harness run) and "
                           "benchmark results (harness bench); give both files")
    backends = list(dict.fromkeys(str(e.model.get("backend") or "?") for e in entries))
    colors = _colors(plt, [e.label for e in entries])
    panels = [(SPEED_FIGURE, "decode tokens/s (batch 1) →", True), (MEMORY_FIGURE, "← peak memory (MiB)", False)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), squeeze=False)
    for ax, (key, xlabel, x_higher) in zip(axes.flat, panels):
        shown = [e for e in entries if e.label in quality and isinstance(e.efficiency.get(key), (int, float))]
        xy = [(float(e.efficiency[key]), quality[e.label][0]) for e in shown]
        front = set(pareto_front(xy, x_higher, y_higher))
        for i, (e, (x, y)) in enumerate(zip(shown, xy)):
            _, lo, hi = quality[e.label]
            err = _errors(y, lo, hi)
            marker = MARKERS[backends.index(str(e.model.get("backend") or "?")) % len(MARKERS)]
            ax.errorbar([x], [y], yerr=[[err[0]], [err[1]]], fmt=marker, color=colors[e.label], capsize=3,
                        markersize=8 if i in front else 6, markerfacecolor=colors[e.label] if i in front else "white",
                        label=e.label)
            ax.annotate(e.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if len(front) > 1:
            line = sorted(xy[i] for i in front)
            ax.plot([p[0] for p in line], [p[1] for p in line], linestyle="--", color="0.5", linewidth=1, zorder=0)
        if xy:
            from matplotlib.ticker import FuncFormatter

            xs = [x for x, _ in xy]
            ax.set_xscale("log")
            ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title("quality against speed" if key == SPEED_FIGURE else "quality against memory", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Quality against cost, one point per model and backend; Pareto front: filled points on the "
                 "dashed line", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
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
        if kind == "efficiency" and len(kinds) > 1 and not efficiency_plottable(entries, cols):
            continue  # plotting everything: without benchmark results there is no efficiency plot
        builders = {"size": size_figure, "bars": bars_figure, "efficiency": efficiency_figure}
        fig = builders[kind](entries, cols)
        for fmt in formats:
            if fmt not in ("png", "svg"):
                raise HarnessError(f"unknown image format {fmt!r}; choose png or svg")
            path = out_dir / f"{prefix}{kind}.{fmt}"
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(path, dpi=150, metadata=metadata)
            written.append(path)
        plt.close(fig)
    return written
