"""Group scores: lm-evaluation-harness's aggregate_metric_list where a group file asks for one
(values and standard errors as lm-eval 0.4.13 computes them, checked against its own functions),
otherwise a pooled score over alike members only, with the metric's own CI.

References: sacrebleu's corpus_bleu over the joined corpus for pooled BLEU; the perplexity
definition exp(-ΣLL/Σwords) over all documents; lm_eval.api.metrics.pooled_sample_stderr and
unweighted_mean_stderr for group standard errors (to 1e-12)."""

from __future__ import annotations

import math

import pytest

from harness.groups import GroupPlan, MemberScores, lmeval_group_scores, pooled_group_scores
from harness.metrics.base import get_metric
from harness.metrics.stats import summarize
from harness.results import MetricResult, TaskResult


def member(name: str, metric_name: str, stats: list, *, tag: str, language: str = "en",
           output_type: str = "multiple_choice", metric=None):
    """A task record and its per-document statistics, as the runner hands them to the groups."""
    metric = metric or get_metric(metric_name)
    v = summarize(metric, stats, n_boot=200, seed=1)
    record = TaskResult(name, {metric_name: MetricResult(metric_name, v.value, v.stderr, v.ci_low, v.ci_high, v.n,
                                                         v.higher_is_better, metric.signature())},
                        n_samples=len(stats), config={"tag": [tag], "language": language, "output_type": output_type})
    return record, MemberScores({metric_name: metric}, {metric_name: stats})


def pooled(*members):
    tasks = {r.name: r for r, _ in members}
    scores = {r.name: s for r, s in members}
    return pooled_group_scores(list(tasks), tasks, scores, n_boot=200, seed=1)


def test_alike_accuracy_is_pooled_over_documents_with_a_ci():
    a = member("a", "acc", [1.0] * 3 + [0.0] * 7, tag="multiple_choice")
    b = member("b", "acc", [1.0] * 24 + [0.0] * 6, tag="multiple_choice")
    values, notes = pooled(a, b)
    acc = values["acc"]
    assert acc.value == pytest.approx(27 / 40) and acc.n == 40 and acc.tasks == ["a", "b"] and not notes
    assert acc.ci_low < acc.value < acc.ci_high and acc.stderr > 0
    assert acc.other["aggregation"] == "pooled documents"


def test_bleu_with_different_tokenizers_or_applications_gets_no_group_value():
    import sacrebleu

    bleu_zh, bleu_en, bleu_dialogue, bleu_en2 = (get_metric("bleu") for _ in range(4))
    zh = member("translation_en_zh", "bleu", bleu_zh.score_texts(["猫坐在垫子上"], [["猫在垫子上"]], "zh"),
                tag="translation", language="zh", output_type="generate_until", metric=bleu_zh)
    en_preds, en_refs = ["the cat sat on the mat", "a dog ran"], [["the cat sat on a mat"], ["the dog ran"]]
    en = member("translation_fr_en", "bleu", bleu_en.score_texts(en_preds, en_refs, "en"),
                tag="translation", output_type="generate_until", metric=bleu_en)
    dialogue = member("dialogue_en", "bleu", bleu_dialogue.score_texts(["hello there"], [["hello there friend"]], "en"),
                      tag="dialogue", output_type="generate_until", metric=bleu_dialogue)
    values, notes = pooled(zh, en, dialogue)
    assert "bleu" not in values
    assert "translation_en_zh" in notes["bleu"] and "dialogue_en" in notes["bleu"]
    # two alike translation tasks: corpus BLEU over the joined corpus, as sacrebleu computes it
    more_preds, more_refs = ["birds fly south", "it rains today"], [["the birds fly south"], ["it rains today"]]
    en2 = member("translation_zh_en", "bleu", bleu_en2.score_texts(more_preds, more_refs, "en"),
                 tag="translation", output_type="generate_until", metric=bleu_en2)
    values, notes = pooled(en, en2)
    joined = sacrebleu.corpus_bleu(en_preds + more_preds, [[r[0] for r in en_refs + more_refs]])
    assert values["bleu"].value == pytest.approx(joined.score, abs=1e-9) and not notes


def test_perplexity_is_pooled_within_a_language_and_not_across():
    # [summed log-likelihood, tokens, words, bytes] per document, as the perplexity metrics keep them
    en1 = member("lm_en", "word_perplexity", [[-20.0, 8, 5, 30], [-50.0, 20, 12, 70]], tag="language_modelling",
                 output_type="loglikelihood_rolling")
    en2 = member("lm_en_more", "word_perplexity", [[-9.0, 4, 3, 15]], tag="language_modelling",
                 output_type="loglikelihood_rolling")
    zh = member("lm_zh", "word_perplexity", [[-40.0, 10, 2, 60]], tag="language_modelling", language="zh",
                output_type="loglikelihood_rolling")
    values, notes = pooled(en1, en2)
    # exp(-ΣLL/Σwords) over all three documents, not a mean of the two perplexities
    assert values["word_perplexity"].value == pytest.approx(math.exp(79 / 20))
    values, notes = pooled(en1, en2, zh)
    assert "word_perplexity" not in values and "lm_zh" in notes["word_perplexity"]


def test_lmeval_group_values_and_stderrs_match_lm_evaluation_harness():
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")

    def rec(name, v, se, n):
        return TaskResult.from_dict(name, {"metrics": {"acc": {"value": v, "stderr": se, "n": n}}})

    tasks = {"x": rec("x", 0.2, 0.05, 10), "y": rec("y", 0.6, 0.02, 90)}
    for weighted in (True, False):
        plans = {"g": GroupPlan("g", [("task", "x"), ("task", "y")], [{"metric": "acc", "weight_by_size": weighted}])}
        acc = lmeval_group_scores("g", plans, tasks)["acc"]
        sizes = [10, 90] if weighted else [1, 1]
        assert acc.value == pytest.approx(lm_metrics.aggregate_subtask_metrics([0.2, 0.6], sizes, weighted), abs=1e-12)
        want = (lm_metrics.pooled_sample_stderr([0.05, 0.02], [10, 90]) if weighted
                else lm_metrics.unweighted_mean_stderr([0.05, 0.02]))
        assert acc.stderr == pytest.approx(want, abs=1e-12)
        assert acc.ci_low == pytest.approx(acc.value - 1.959963984540054 * want)
        assert acc.tasks == ["x", "y"] and acc.n == 100


def test_lmeval_groups_aggregate_every_filter_the_members_report():
    """gsm8k-style tasks report exact_match under two filters: lm-eval aggregates each."""
    def rec(name, strict, flexible):
        by_filter = {"strict-match": {"exact_match": {"name": "exact_match", "value": strict, "n": 10, "stderr": 0.1}},
                     "flexible-extract": {"exact_match": {"name": "exact_match", "value": flexible, "n": 10, "stderr": 0.1}}}
        return TaskResult.from_dict(name, {"metrics": {"exact_match": {"value": strict, "n": 10, "filter": "strict-match"}},
                                           "metrics_by_filter": by_filter})

    tasks = {"p": rec("p", 0.1, 0.3), "q": rec("q", 0.3, 0.5)}
    plans = {"g": GroupPlan("g", [("task", "p"), ("task", "q")], [{"metric": "exact_match"}])}
    out = lmeval_group_scores("g", plans, tasks)
    assert out["exact_match[strict-match]"].value == pytest.approx(0.2)
    assert out["exact_match[flexible-extract]"].value == pytest.approx(0.4)
    plans["g"].aggregate = [{"metric": "exact_match", "filter_list": "strict-match"}]
    assert list(lmeval_group_scores("g", plans, tasks)) == ["exact_match[strict-match]"]
