"""Bootstrap confidence intervals of the generation metrics: seeded, containing the value, and
resampling sufficient statistics for the corpus-level ones."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import sacrebleu

from harness.metrics.base import Sample, get_metric
from harness.metrics.judge import JudgeRating, unparseable_count
from harness.metrics.stats import bootstrap_indices, summarize
from tests.conftest import REPO


@pytest.fixture(scope="module")
def pairs():
    rows = [
        json.loads(line) for line in (REPO / "tasks/translation/en_fr.jsonl").read_text().splitlines() if line.strip()
    ]
    refs = [r["en"] for r in rows]
    rng = random.Random(3)
    hyps = [" ".join(w for w in r.split() if rng.random() > 0.2) for r in refs]
    return [Sample(str(i), "generate_until", target=r, prediction=h) for i, (h, r) in enumerate(zip(hyps, refs))]


NAMES = [
    "bleu",
    "chrf",
    "chrf_pp",
    "ter",
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "token_f1",
    "distinct_1",
    "distinct_2",
]


@pytest.mark.parametrize("name", NAMES)
def test_ci_contains_value_and_is_seeded(name, pairs):
    metric = get_metric(name)
    stats = metric.sample_stats(pairs)
    first = summarize(metric, stats, n_boot=500, seed=5)
    assert first.value == metric.aggregate(stats)
    assert first.n == len(pairs)
    assert first.stderr is not None and first.stderr > 0
    assert first.ci_low <= first.value <= first.ci_high
    again = summarize(metric, stats, n_boot=500, seed=5)
    assert (again.ci_low, again.ci_high, again.stderr) == (first.ci_low, first.ci_high, first.stderr)
    other = summarize(metric, stats, n_boot=500, seed=6)
    if name.startswith("distinct"):  # corpus distinct-n: a jackknife, no random draws (docs/metrics.md)
        assert (other.ci_low, other.ci_high) == (first.ci_low, first.ci_high)
    else:
        assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


@pytest.mark.parametrize("name", ["bleu", "chrf", "ter"])
def test_corpus_bootstrap_resamples_statistics(name, pairs):
    """The fast path (sums of resampled statistics) equals recomputing the corpus score of each
    resample with sacrebleu; it is not a mean of sentence scores."""
    metric = get_metric(name)
    stats = metric.sample_stats(pairs)
    assert metric.corpus_level
    hyps = [s.prediction for s in pairs]
    refs = [s.target for s in pairs]
    reference = {"bleu": sacrebleu.BLEU, "chrf": sacrebleu.CHRF, "ter": sacrebleu.TER}[name]()
    rows = bootstrap_indices(len(stats), 20, seed=9)
    for row in rows[:5]:
        resampled = reference.corpus_score([hyps[i] for i in row], [[refs[i] for i in row]]).score
        assert metric.aggregate([stats[i] for i in row]) == pytest.approx(resampled, abs=1e-9)
    from harness.metrics.stats import _boots_from_sums

    fast = _boots_from_sums(metric, stats, rows)
    slow = np.array([metric.aggregate([stats[i] for i in row]) for row in rows])
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-9)
    if name == "bleu":  # corpus BLEU is not the mean of sentence BLEU
        mean_of_sentences = np.mean([metric.sample_score(s) for s in stats])
        assert abs(metric.aggregate(stats) - mean_of_sentences) > 1.0


def test_distinct_modes_bootstrap_paths(pairs):
    corpus = get_metric("distinct_2")
    response = get_metric("distinct_2", mode="response")
    assert corpus.corpus_level and not response.corpus_level
    value = summarize(response, response.sample_stats(pairs), n_boot=300, seed=1)
    assert value.ci_low <= value.value <= value.ci_high


def test_unparseable_judge_verdicts_are_skipped_and_counted():
    metric = JudgeRating()
    stats = [
        {"rating": 8.0, "judgment": "[[8]]"},
        {"rating": None, "judgment": "no verdict"},
        {"rating": 4.0, "judgment": "[[4]]"},
        {"rating": 6.0, "judgment": "[[6]]"},
    ]
    value = summarize(metric, stats, n_boot=200, seed=2)
    assert value.value == 6.0
    assert value.n == 4
    assert unparseable_count(stats) == 1
    assert metric.sample_score(stats[1]) is None
    assert value.ci_low <= 6.0 <= value.ci_high
