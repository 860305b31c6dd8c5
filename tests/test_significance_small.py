"""Significance on small samples: a result from 3 documents must not read p<0.001.

Below 30 documents the p-value comes from a permutation test (exact over all 2^n patterns up to
n = 12), checked against scipy.stats.permutation_test, and every such result warns that the
sample is small."""

from __future__ import annotations

import random

import numpy as np
import pytest

from harness.cli import main
from harness.metrics.base import Sample, get_metric
from harness.report.compare import compare_files
from harness.report.significance import SMALL_N, approximate_randomization, paired_bootstrap, sign_flip_test
from tests.test_report_data import FakeModel, write_results


def test_three_documents_that_all_improve_are_not_significant():
    test = paired_bootstrap([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    # all 8 sign patterns: only "all +" and "all -" are as extreme as the observed mean, so p = 2/8
    assert test.p_value == 0.25 and test.delta == 1.0
    assert test.method.startswith("exact sign-flip permutation (8 patterns)")
    assert "only 3 documents" in test.warning and "small sample" in test.warning
    assert paired_bootstrap([0.0] * 40, [1.0] * 40).warning == ""  # 40 documents: not small


@pytest.mark.parametrize("n", [5, 10])
def test_exact_sign_flip_test_equals_scipy(n):
    from scipy.stats import permutation_test

    rng = np.random.default_rng(n)
    b, c = rng.random(n), rng.random(n) + 0.3
    ours, method = sign_flip_test(c - b)
    ref = permutation_test((c, b), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf,
                           alternative="two-sided")
    assert method.startswith("exact") and ours == pytest.approx(ref.pvalue, abs=1e-12)


def test_random_sign_flips_above_the_exact_limit_stay_close_to_scipy():
    from scipy.stats import permutation_test

    rng = np.random.default_rng(0)
    b, c = rng.random(15), rng.random(15) + 0.15
    ours, method = sign_flip_test(c - b, n_resamples=20000)
    ref = permutation_test((c, b), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf)
    assert method == "sign-flip permutation" and ours == pytest.approx(ref.pvalue, abs=0.01)


def test_corpus_metric_on_few_documents_is_an_exact_randomization():
    bleu = get_metric("bleu")
    refs = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn", "rain fell on the hills"]
    good = [bleu.sample_stats([Sample(str(i), "generate_until", target=r, prediction=r, language="en")])[0]
            for i, r in enumerate(refs)]
    bad = [bleu.sample_stats([Sample(str(i), "generate_until", target=r, prediction="nothing like it", language="en")])[0]
           for i, r in enumerate(refs)]
    test = approximate_randomization(bleu, bad, good)
    assert test.method == "exact randomization (16 swap patterns)"
    assert test.p_value >= 2 / 16 and "only 4 documents" in test.warning


def test_compare_on_a_tiny_run_warns_and_shows_n(tmp_path, capsys):
    base = write_results(tmp_path / "a", "base", [FakeModel("hf:m", quality=0.2)], n_docs=3)
    cand = write_results(tmp_path / "b", "cand", [FakeModel("hf:m", quality=1.0, seed=3)], n_docs=3)
    comp = compare_files(base, cand)
    acc = next(r for r in comp.rows if (r.task, r.metric) == ("mc_colors", "acc"))
    assert acc.n == 3 < SMALL_N and acc.p_value >= 0.25 and acc.verdict == "unchanged"
    assert "small sample" in acc.note
    assert all(r.p_value is None or r.p_value >= 0.25 for r in comp.rows)  # nothing reads p<0.001
    assert main(["compare", str(base), str(cand)]) == 0
    out = capsys.readouterr().out
    assert "(n=3)" in out and "<0.001" not in out and "note: mc_colors/acc: only 3 documents" in out


def test_larger_samples_keep_the_bootstrap():
    rng = random.Random(0)
    b = [float(rng.random() < 0.8) for _ in range(200)]
    c = [x if rng.random() < 0.6 else 0.0 for x in b]
    test = paired_bootstrap(b, c, n_resamples=2000)
    assert test.method == "paired bootstrap" and test.warning == "" and test.p_value < 0.01
