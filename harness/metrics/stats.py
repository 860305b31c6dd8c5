"""Aggregates with seeded bootstrap confidence intervals and standard errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from harness.metrics.base import Metric


@dataclass
class MetricValue:
    value: float
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot rows of n indices drawn with replacement, the same for a given (n, n_boot, seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def summarize(metric: Metric, stats: Sequence[Any], *, n_boot: int = 1000, seed: int = 1234) -> MetricValue:
    """The metric's value, with the bootstrap standard error and percentile 95% CI.

    Resampling draws documents with replacement and recomputes the aggregate from their
    statistics, so corpus-level metrics (BLEU, perplexity) keep their corpus definition. A metric
    that the bootstrap would bias offers `leave_one_out(stats)` instead: a jackknife CI.
    """
    n = len(stats)
    value = metric.aggregate(stats)
    if n < 2 or n_boot < 2:
        return MetricValue(value, None, None, None, n, metric.higher_is_better)
    jackknife = getattr(metric, "leave_one_out", None)
    loo = jackknife(stats) if jackknife is not None else None
    if loo is not None:
        return _jackknife(metric, value, loo)
    idx = bootstrap_indices(n, n_boot, seed)
    if not metric.corpus_level:
        scores = np.asarray([float(s) for s in stats])
        boots = scores[idx].mean(axis=1)
    elif hasattr(metric, "aggregate_sums"):
        boots = _boots_from_sums(metric, stats, idx)
    else:
        boots = np.array([metric.aggregate([stats[i] for i in row]) for row in idx])
    boots = boots[np.isfinite(boots)]
    if len(boots) < 2:
        return MetricValue(value, None, None, None, n, metric.higher_is_better)
    low, high = np.percentile(boots, [2.5, 97.5])
    stderr = float(np.std(boots, ddof=1))
    return MetricValue(_clean(value), _clean(stderr), _clean(low), _clean(high), n, metric.higher_is_better)


def _jackknife(metric: Metric, value: float, loo: Sequence[float]) -> MetricValue:
    """Jackknife standard error from leave-one-out values, with a normal 95% interval around the
    value: for statistics the bootstrap would bias (see the metric's `leave_one_out`)."""
    n = len(loo)
    values = np.asarray(loo, dtype=np.float64)
    stderr = float(math.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2)))
    return MetricValue(_clean(value), _clean(stderr), _clean(value - 1.96 * stderr), _clean(value + 1.96 * stderr),
                       n, metric.higher_is_better)


def _boots_from_sums(metric: Metric, stats: Sequence[Any], idx: np.ndarray) -> np.ndarray:
    """Bootstrap values of a metric whose statistics add up column-wise (BLEU, chrF, TER):
    `metric.aggregate_sums(column sums)` per resample, the sums as (resample counts) @ statistics."""
    matrix = np.asarray(stats, dtype=np.float64)
    boots = []
    for chunk in np.array_split(idx, max(1, len(idx) // 64)):
        counts = np.stack([np.bincount(row, minlength=len(stats)) for row in chunk]).astype(np.float64)
        boots.extend(metric.aggregate_sums(sums) for sums in counts @ matrix)
    return np.asarray(boots, dtype=np.float64)


def _clean(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
