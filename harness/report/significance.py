"""Paired significance tests on per-sample statistics, as sacrebleu's `--paired-bs`/`--paired-ar` do.

- Mean-of-scores metrics (accuracy, ROUGE, exact match): paired bootstrap over documents of the
  mean score difference; the p-value is two-sided against the bootstrap distribution shifted to
  zero mean (Koehn 2004; Berg-Kirkpatrick et al. 2012, sacrebleu's formula).
- Corpus-level metrics (BLEU, chrF, TER, perplexity, corpus distinct-n): approximate randomization
  (Riezler & Maxwell 2005): swap each document's two statistics with probability 1/2, recompute both
  aggregates with the metric's own `aggregate` (never an average of sentence scores), and count
  how often the absolute difference reaches the observed one. The CI of the difference is a paired
  bootstrap of the recomputed aggregates.
- Small samples (fewer than SMALL_N = 30 paired documents): the bootstrap p-value is unreliable
  there (three documents that all improve would read p = 0.001), so the p-value comes from a
  permutation test instead: for mean-of-scores metrics, the paired sign-flip test (exact over all
  2^n sign patterns up to n = EXACT_MAX, else random flips); for corpus metrics, approximate
  randomization made exact over all 2^n swap patterns up to n = EXACT_MAX. With n documents no
  p-value can be below 2 / 2^n. Each such result carries a warning that the sample is small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics.base import Metric


@dataclass
class PairedTest:
    delta: float | None  # candidate - baseline on the paired documents
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    method: str
    n: int
    warning: str = ""  # e.g. that the sample is too small for the bootstrap to be trusted


SMALL_N = 30  # below this many documents, say so and use a permutation p-value
EXACT_MAX = 12  # enumerate every sign / swap pattern up to 2^12 = 4096 of them


def small_sample_warning(n: int) -> str:
    """The warning for a test on n < SMALL_N documents ('' otherwise)."""
    if n >= SMALL_N:
        return ""
    return (f"only {n} document{'s' if n != 1 else ''}: a small sample (under {SMALL_N}); the p-value is a "
            f"permutation test's, never below {min(1.0, 2 / 2 ** n):.2g}, and the CI is rough")


def _patterns(n: int, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Boolean flip patterns, (every one of the 2^n, True) when n <= EXACT_MAX, else random ones."""
    if n <= EXACT_MAX:
        codes = np.arange(2 ** n, dtype=np.int64)
        return ((codes[:, None] >> np.arange(n)) & 1).astype(bool), True
    return rng.random((n_resamples, n)) < 0.5, False


def _permutation_p(observed: float, null: np.ndarray, exact: bool) -> float:
    """Two-sided p: the share of patterns at least as extreme (exact: the identity is one of them)."""
    hits = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    if observed == 0:
        return 1.0
    return min(1.0, hits / len(null) if exact else (1 + hits) / (1 + len(null)))


def sign_flip_test(diff: Sequence[float], *, n_resamples: int = 10000, seed: int = 1234) -> tuple[float, str]:
    """Paired permutation test of a mean difference: (two-sided p, method name)."""
    d = np.asarray(diff, dtype=np.float64)
    flips, exact = _patterns(len(d), n_resamples, np.random.default_rng(seed))
    null = (np.where(flips, -d, d)).mean(axis=1)
    method = f"exact sign-flip permutation ({len(null)} patterns)" if exact else "sign-flip permutation"
    return _permutation_p(float(d.mean()), null, exact), method


def paired_bootstrap(baseline: Sequence[float], candidate: Sequence[float], *, n_resamples: int = 1000,
                     seed: int = 1234) -> PairedTest:
    """Paired bootstrap of the mean per-sample difference (candidate - baseline)."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    keep = np.isfinite(b) & np.isfinite(c)
    diff = (c - b)[keep]
    n = len(diff)
    if n == 0:
        return PairedTest(None, None, None, None, "paired bootstrap", 0)
    observed = float(diff.mean())
    if n < 2:
        return PairedTest(observed, None, None, None, "paired bootstrap", n, small_sample_warning(n))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    boots = diff[idx].mean(axis=1)
    result = _finish(observed, boots, "paired bootstrap", n)
    if n < SMALL_N:
        p, method = sign_flip_test(diff, n_resamples=max(n_resamples, 1000), seed=seed)
        result.p_value, result.method, result.warning = p, f"{method}; paired bootstrap CI", small_sample_warning(n)
    return result


def _finish(observed: float, boots: np.ndarray, method: str, n: int) -> PairedTest:
    boots = boots[np.isfinite(boots)]
    if len(boots) < 2:
        return PairedTest(observed, None, None, None, method, n)
    low, high = np.percentile(boots, [2.5, 97.5])
    null = boots - boots.mean()
    p = (1 + int(np.sum(np.abs(null) >= abs(observed) - 1e-12))) / (1 + len(boots))
    if observed == 0:
        p = 1.0
    return PairedTest(observed, float(low), float(high), min(1.0, p), method, n)


def approximate_randomization(metric: Metric, baseline: Sequence[Any], candidate: Sequence[Any], *,
                              n_resamples: int = 1000, seed: int = 1234) -> PairedTest:
    """Approximate randomization test of a corpus-level metric's difference, with a paired-bootstrap CI."""
    n = len(baseline)
    method = "approximate randomization"
    if n == 0:
        return PairedTest(None, None, None, None, method, 0)
    observed = _finite(metric.aggregate(candidate)) - _finite(metric.aggregate(baseline))
    if not math.isfinite(observed):
        return PairedTest(None, None, None, None, method, n)
    if n < 2:
        return PairedTest(observed, None, None, None, method, n, small_sample_warning(n))
    rng = np.random.default_rng(seed)
    if n < SMALL_N:
        swaps, exact = _patterns(n, n_resamples, rng)
    else:
        swaps, exact = rng.random((n_resamples, n)) < 0.5, False
    if exact:
        method = f"exact randomization ({len(swaps)} swap patterns)"
    idx = rng.integers(0, n, size=(n_resamples, n))
    summable = _summable(metric, baseline, candidate)
    if summable is not None:
        b, c = summable
        agg = metric.aggregate_sums  # type: ignore[attr-defined]
        swap_b = swaps @ c + (~swaps) @ b
        swap_c = swaps @ b + (~swaps) @ c
        null = np.array([agg(x) - agg(y) for x, y in zip(swap_c, swap_b)])
        counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
        boots = np.array([agg(x) - agg(y) for x, y in zip(counts @ c, counts @ b)])
    else:
        null = np.array([_swapped_delta(metric, baseline, candidate, row) for row in swaps])
        boots = np.array([_finite(metric.aggregate([candidate[i] for i in row]))
                          - _finite(metric.aggregate([baseline[i] for i in row])) for row in idx])
    null = null[np.isfinite(null)]
    boots = boots[np.isfinite(boots)]
    low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5])) if len(boots) >= 2 else (None, None)
    warning = small_sample_warning(n)
    if len(null) == 0:
        return PairedTest(observed, low, high, None, method, n, warning)
    return PairedTest(observed, low, high, _permutation_p(observed, null, exact), method, n, warning)


def _swapped_delta(metric: Metric, baseline: Sequence[Any], candidate: Sequence[Any], swap: np.ndarray) -> float:
    new_b = [y if s else x for x, y, s in zip(baseline, candidate, swap)]
    new_c = [x if s else y for x, y, s in zip(baseline, candidate, swap)]
    return _finite(metric.aggregate(new_c)) - _finite(metric.aggregate(new_b))


def _summable(metric: Metric, baseline: Sequence[Any], candidate: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Statistics as float matrices when the metric aggregates from their column sums (BLEU, chrF, TER)."""
    if not hasattr(metric, "aggregate_sums"):
        return None
    try:
        b = np.asarray(baseline, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return (b, c) if b.ndim == 2 and b.shape == c.shape else None


def _finite(x: Any) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return x
