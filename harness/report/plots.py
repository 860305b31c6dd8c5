"""Figures for a paper or a team page (matplotlib; PNG and SVG), one idea each.

- size: each task's primary score against parameter count (log axis), with its 95% CI, one
  small panel per task; multiple-choice panels carry the chance line (the mean of 1/choices
  over the task's documents). Drawn when the models have at least two parameter counts.
- bars: each task's primary score per model with its 95% CI, one small panel per task (scores
  of different tasks are on different scales, so they never share an axis).
- efficiency: quality against decode speed (results of `harness bench` beside `harness run`), one
  point per model and backend, the Pareto front joined (no other point is both better and
  faster). Labels are placed so that they never overlap (figure_layout.py).
Models are the leaderboard's rows (ranking.py): the same weights on two backends with the same
numbers are one point, not two on top of each other. `choose_kinds` picks the figures that fit
the results given. Sized for a page column (7 in wide for panels, 3.4 in for one plot) at 8 pt;
the output is deterministic (no dates or software versions; fixed SVG ids), so the same inputs
give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.report.collect import Column, ModelEntry, format_params
from harness.report.ranking import ModelGroup, group_by_weights, normalized_scores, primary_columns

KINDS = ("size", "bars", "efficiency")
SPEED_FIGURE, MEMORY_FIGURE = "decode_tokens_per_s", "peak_memory_mib"
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
WIDE, NARROW = 7.0, 3.4  # inches: a two-column figure, one column
PANEL_COLUMNS = 4


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "harness", "svg.fonttype": "none", "font.size": 8,
                                "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
                                "legend.fontsize": 7, "axes.spines.top": False, "axes.spines.right": False,
                                "font.family": "DejaVu Sans"})
    import matplotlib.pyplot as plt

    return plt


def _errors(value: float, low: float | None, high: float | None) -> tuple[float, float]:
    if low is None or high is None:
        return 0.0, 0.0
    return max(0.0, value - low), max(0.0, high - value)


def _label(g: ModelGroup) -> str:
    others = [str(v.model.get("backend")) for v in g.variants[1:] if v.tasks]
    return g.entry.label + (f" (= {', '.join(others)})" if others else "")


def _headline(groups: Sequence[ModelGroup], cols: Sequence[Column]) -> list[Column]:
    reps = [g.entry for g in groups if g.entry.tasks]
    return primary_columns(reps, cols) or list(cols)


def chance_level(entries: Sequence[ModelEntry], col: Column) -> float | None:
    """Accuracy by guessing uniformly on a multiple-choice task: the mean of 1/len(choices) over its
    documents (from the per-sample file); None for other tasks or metrics."""
    from harness.report.html import read_samples
    from harness.report.ranking import output_adapter, task_config

    adapter = output_adapter(task_config(entries, col.task).get("output_type"))
    if adapter is None or col.metric not in adapter.chance_metrics:
        return None
    for e in entries:
        path = e.samples_path(col.task)
        counts = [len(r["choices"]) for r in (read_samples(path) if path else []) if r.get("choices")]
        if counts:
            return sum(1 / n for n in counts) / len(counts)
    return None


def _panel_grid(plt, n: int, height: float = 1.9):
    ncols = min(PANEL_COLUMNS, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDE, height * nrows + 0.5), squeeze=False, layout="constrained")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _colors(plt, groups: Sequence[ModelGroup]) -> dict[str, object]:
    cycle = plt.get_cmap("tab10")
    return {g.entry.label: cycle(i % 10) for i, g in enumerate(groups)}


def _legend(fig, groups: Sequence[ModelGroup], colors: dict[str, object], markers: dict[str, str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=markers[g.entry.label], linestyle="", color=colors[g.entry.label]) for g in groups]
    fig.legend(handles, [_label(g) for g in groups], loc="outside upper center", ncol=min(len(groups), 3),
               frameon=False, handletextpad=0.3, columnspacing=1.2)


def _scored(groups: Sequence[ModelGroup]) -> list[ModelGroup]:
    return [g for g in groups if g.entry.tasks]


def size_figure(entries: Sequence[ModelEntry], cols: Sequence[Column]):
    """Each task's primary score against parameter count, one panel per task, CIs and chance lines."""
    plt = _pyplot()
    groups = [g for g in _scored(group_by_weights(entries)) if g.entry.n_params]
    if not groups:
        raise HarnessError("no model in the results records its parameter count; the size plot needs n_params")
    headline = _headline(groups, cols)
    colors = _colors(plt, groups)
    markers = {g.entry.label: MARKERS[i % len(MARKERS)] for i, g in enumerate(groups)}
    fig, axes = _panel_grid(plt, len(headline))
    sizes = [g.entry.n_params for g in groups]
    for ax, col in zip(axes, headline):
        for g in groups:
            cell = g.entry.cell(col.task, col.metric)
            if cell is None or cell.value is None:
                continue
            lo, hi = _errors(cell.value, cell.ci_low, cell.ci_high)
            ax.errorbar([g.entry.n_params], [cell.value], yerr=[[lo], [hi]], fmt=markers[g.entry.label],
                        color=colors[g.entry.label], capsize=2, markersize=4, elinewidth=0.8)
        _chance(ax, entries, col)
        _params_axis(ax, sizes)
        ax.set_title(col.task)
        ax.set_ylabel(f"{col.metric} {col.arrow}")
        ax.grid(True, which="major", alpha=0.25, linewidth=0.5)
    _legend(fig, groups, colors, markers)
    fig.supxlabel("parameters (log scale); bars: 95% CI", fontsize=7)
    return fig


def _chance(ax, entries: Sequence[ModelEntry], col: Column) -> None:
    chance = chance_level(entries, col)
    if chance is not None:
        ax.axhline(chance, color="0.45", linestyle=":", linewidth=0.9)
        ax.annotate("chance", (0, chance), xycoords=("axes fraction", "data"), xytext=(2, 2),
                    textcoords="offset points", ha="left", va="bottom", fontsize=6, color="0.35", zorder=5,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, chance - 0.05 * (high - low)), max(high, chance + 0.08 * (high - low)))


def bars_figure(entries: Sequence[ModelEntry], cols: Sequence[Column]):
    """Each task's primary score per model with its 95% CI, one panel per task."""
    plt = _pyplot()
    groups = _scored(group_by_weights(entries))
    if not groups:
        raise HarnessError("no quality results to plot; give results files of `harness run`")
    headline = _headline(groups, cols)
    colors = _colors(plt, groups)
    markers = {g.entry.label: "s" for g in groups}
    fig, axes = _panel_grid(plt, len(headline), height=1.6)
    for ax, col in zip(axes, headline):
        for i, g in enumerate(groups):
            cell = g.entry.cell(col.task, col.metric)
            if cell is None or cell.value is None:
                continue
            lo, hi = _errors(cell.value, cell.ci_low, cell.ci_high)
            ax.bar([i], [cell.value], 0.7, yerr=[[lo], [hi]], color=colors[g.entry.label], capsize=2,
                   error_kw={"elinewidth": 0.8})
        _chance(ax, entries, col)
        ax.set_xticks([])
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(col.task)
        ax.set_ylabel(f"{col.metric} {col.arrow}")
        ax.grid(True, axis="y", alpha=0.25, linewidth=0.5)
    _legend(fig, groups, colors, markers)
    fig.supxlabel("bars: 95% CI", fontsize=7)
    return fig


def quality_points(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> tuple[dict[str, tuple], str, bool]:
    """Per entry label (value, ci_low, ci_high), the axis title and whether higher is better: the
    single column's values, or the mean normalized score (0-1, best 1) over each task's primary
    metric, computed over the leaderboard's rows and shared by a row's variants."""
    groups = _scored(group_by_weights(entries))
    reps = [g.entry for g in groups]
    if len(cols) == 1:
        col = cols[0]
        points = {v.label: (c.value, c.ci_low, c.ci_high) for g in groups for v in g.variants
                  if v.tasks and (c := g.entry.cell(col.task, col.metric)) is not None and c.value is not None}
        return points, f"{col.task} {col.metric} {col.arrow}", col.higher_is_better
    headline = _headline(groups, cols)
    per: dict[str, list[float]] = {}
    for col in headline:
        for label, score in normalized_scores(reps, col).items():
            per.setdefault(label, []).append(score)
    points = {v.label: (sum(per[g.entry.label]) / len(per[g.entry.label]), None, None)
              for g in groups for v in g.variants if v.tasks and per.get(g.entry.label)}
    return points, f"mean normalized score, {len(headline)} tasks ↑", True


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
    return sum(1 for e in entries if e.label in quality and isinstance(e.efficiency.get(SPEED_FIGURE), (int, float))) >= 1


def efficiency_figure(entries: Sequence[ModelEntry], cols: Sequence[Column]):
    """Quality against decode tokens/s (batch 1), one point per model and backend, the Pareto front joined."""
    from matplotlib.ticker import FuncFormatter

    from harness.report.figure_layout import place_labels

    plt = _pyplot()
    if not efficiency_plottable(entries, cols):
        raise HarnessError("the efficiency plot needs, for the same model spec, quality results (harness run) and "
                           "benchmark results (harness bench); give both files")
    quality, ylabel, y_higher = quality_points(entries, cols)
    shown = [e for e in entries if e.label in quality and isinstance(e.efficiency.get(SPEED_FIGURE), (int, float))]
    xy = [(float(e.efficiency[SPEED_FIGURE]), quality[e.label][0]) for e in shown]
    front = set(pareto_front(xy, True, y_higher))
    fig, ax = plt.subplots(figsize=(NARROW, 2.6), layout="constrained")
    for i, (e, (x, y)) in enumerate(zip(shown, xy)):
        _, lo, hi = quality[e.label]
        err = _errors(y, lo, hi)
        ax.errorbar([x], [y], yerr=[[err[0]], [err[1]]], fmt="o", color="C0" if i in front else "0.45", capsize=2,
                    markersize=5, markerfacecolor="C0" if i in front else "white", zorder=3)
    if len(front) > 1:
        line = sorted(xy[i] for i in front)
        ax.plot([p[0] for p in line], [p[1] for p in line], linestyle="--", color="C0", linewidth=0.8, zorder=2)
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.8, max(xs) * 1.8)
    span = (max(ys) - min(ys)) or abs(max(ys)) or 1.0
    ax.set_ylim(min(ys) - 0.35 * span, max(ys) + 0.35 * span)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xlabel("decode tokens/s, batch 1 (log scale) →")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.25, linewidth=0.5)
    ax.set_title("Quality against speed; filled: Pareto front", loc="left")
    place_labels(ax, xy, [e.label for e in shown], fontsize=6.5)
    return fig


def _params_axis(ax, sizes: Sequence[int]) -> None:
    """Log-scaled parameter axis, at least a decade wide, ticks labelled 100M, 200M, 500M, 1B, ..."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(sizes), max(sizes)
    ax.set_xscale("log")
    ax.set_xlim(lo / 10 ** 0.5 if hi / lo < 10 else lo / 1.5, hi * 10 ** 0.5 if hi / lo < 10 else hi * 1.5)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_params(round(x))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def choose_kinds(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> list[str]:
    """The figures that fit these results: size when there are two parameter counts or more, bars
    when there are quality results, efficiency when benchmark results stand beside them."""
    groups = _scored(group_by_weights(entries))
    kinds = []
    if len({g.entry.n_params for g in groups if g.entry.n_params}) >= 2:
        kinds.append("size")
    if groups:
        kinds.append("bars")
    if groups and efficiency_plottable(entries, cols):
        kinds.append("efficiency")
    return kinds


def save_plots(entries: Sequence[ModelEntry], cols: Sequence[Column], out_dir: str | Path,
               kinds: Sequence[str] | None = None, formats: Sequence[str] = ("png", "svg"), prefix: str = "") -> list[Path]:
    """Write each plot kind (default: `choose_kinds`) in each format to out_dir/<prefix><kind>.<format>."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    kinds = choose_kinds(entries, cols) if kinds is None else list(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise HarnessError(f"unknown plot kind {kind!r}; choose from {', '.join(KINDS)}")
    for fmt in formats:
        if fmt not in ("png", "svg"):
            raise HarnessError(f"unknown image format {fmt!r}; choose png or svg")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    builders = {"size": size_figure, "bars": bars_figure, "efficiency": efficiency_figure}
    for kind in kinds:
        fig = builders[kind](entries, cols)
        for fmt in formats:
            path = out_dir / f"{prefix}{kind}.{fmt}"
            # no dates or versions in the file: the same inputs give the same bytes
            metadata = {"Date": None, "Creator": None} if fmt == "svg" else {"Software": None}
            fig.savefig(path, dpi=200, metadata=metadata)
            written.append(path)
        plt.close(fig)
    return written
