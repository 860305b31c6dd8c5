"""Metrics that lm-evaluation-harness task files name, against lm-eval's own functions (the
pinned lm-eval package): acc_norm / acc_bytes, f1, mcc, exact_match options, bleu/chrf/ter."""

import random

import pytest

from harness.config import parse_task_config
from harness.metrics.base import Sample, get_metric


def mc_sample(lls, choices, gold):
    return Sample(doc_id="d", output_type="multiple_choice", target=gold, choices=choices,
                  loglikelihoods=[(lp, False) for lp in lls])


def test_acc_norm_divides_by_characters_and_acc_bytes_by_bytes():
    # "été" is 3 characters but 5 UTF-8 bytes. Per character: -0.9 vs -0.7, choice 1 wins;
    # per byte: -0.54 vs -0.7, choice 0 wins.
    s = mc_sample([-2.7, -2.8], ["été", "abcd"], gold=1)
    assert get_metric("acc_norm").sample_stats([s]) == [1.0]
    assert get_metric("acc_bytes").sample_stats([s]) == [0.0]


def _lmeval_mc(lls, choices, gold):
    """lm-eval's multiple-choice scoring (ConfigurableTask.process_results), run by lm-eval itself."""
    import numpy as np

    completion_len = np.array([float(len(i)) for i in choices])
    byte_length = np.array([float(len(i.encode("utf-8"))) for i in choices])
    lls = np.array(lls)
    return (float(np.argmax(lls / completion_len) == gold), float(np.argmax(lls / byte_length) == gold),
            (gold, int(np.argmax(lls))))


def test_choice_metrics_equal_lm_evaluation_harness_on_random_documents():
    from lm_eval.api.metrics import f1_score, matthews_corrcoef

    rng = random.Random(3)
    words = ["été", "naïve", "cat", "dog", "façade", "x", "日本語", "long answer"]
    samples, expect_norm, expect_bytes, items = [], [], [], []
    for _ in range(300):
        choices = rng.sample(words, 2)
        lls = [rng.uniform(-12, -1) for _ in choices]
        gold = rng.randrange(2)
        samples.append(mc_sample(lls, choices, gold))
        norm, byte, item = _lmeval_mc(lls, choices, gold)
        expect_norm.append(norm), expect_bytes.append(byte), items.append(item)
    assert get_metric("acc_norm").sample_stats(samples) == expect_norm
    assert get_metric("acc_bytes").sample_stats(samples) == expect_bytes
    assert expect_norm != expect_bytes  # the two definitions differ on these documents
    f1, mcc = get_metric("f1"), get_metric("mcc")
    assert f1.aggregate(f1.sample_stats(samples)) == pytest.approx(float(f1_score(items)), abs=1e-12)
    assert mcc.aggregate(mcc.sample_stats(samples)) == pytest.approx(float(matthews_corrcoef(items)), abs=1e-12)


def test_mcc_on_more_than_two_choices_and_f1_refuses_them():
    from lm_eval.api.metrics import matthews_corrcoef

    from harness.errors import HarnessError

    rng = random.Random(5)
    samples, items = [], []
    for _ in range(100):
        lls = [rng.uniform(-5, 0) for _ in range(4)]
        gold = rng.randrange(4)
        samples.append(mc_sample(lls, list("abcd"), gold))
        items.append((gold, max(range(4), key=lls.__getitem__)))
    mcc = get_metric("mcc")
    assert mcc.aggregate(mcc.sample_stats(samples)) == pytest.approx(float(matthews_corrcoef(items)), abs=1e-12)
    f1 = get_metric("f1")
    with pytest.raises(HarnessError, match="binary"):
        f1.aggregate(f1.sample_stats(samples))


EM_CASES = [
    ("The Cat.", "the cat", {}),
    ("The Cat.", "the cat", {"ignore_case": True}),
    ("The Cat.", "the cat", {"ignore_case": True, "ignore_punctuation": True}),
    ("Answer: 42 apples", "42", {"regexes_to_ignore": [r"Answer: ", r" apples"]}),
    ("ANSWER: 42", "answer: 42", {"regexes_to_ignore": [r"answer"], "ignore_case": True}),
    ("room 101!", "room !", {"ignore_numbers": True}),
    ("«Café»", "café", {"ignore_case": True, "ignore_punctuation": True}),  # ASCII punctuation only
    ("$1,000", "1000", {"ignore_punctuation": True}),
]


@pytest.mark.parametrize(("prediction", "reference", "options"), EM_CASES)
def test_exact_match_options_equal_lm_evaluation_harness(prediction, reference, options):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    expected = exact_match_hf_evaluate(predictions=[prediction], references=[reference], **options)["exact_match"]
    metric = get_metric("exact_match", strip=False, **options)
    s = Sample(doc_id="d", output_type="generate_until", target=[reference], prediction=prediction)
    assert metric.sample_stats([s]) == [float(expected)]


def test_exact_match_takes_lm_eval_keys_in_a_task_file():
    raw = {"task": "t", "dataset_path": "json", "output_type": "generate_until", "doc_to_text": "q", "doc_to_target": "a",
           "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                            "ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$"]}]}
    config = parse_task_config(raw, "t.yaml")
    assert config.metric_list[0].options == {"ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$"]}


SYSTEM = ["The cat sat on the mat.", "A quick brown fox jumps.", "It rains in Paris today", "Hello world", "No"]
REFS = ["The cat is on the mat.", "The quick brown fox jumped.", "Today it is raining in Paris.", "Hello, world!", "Yes"]


@pytest.mark.parametrize("name", ["bleu", "chrf", "ter"])
def test_corpus_metrics_equal_lm_evaluation_harness_aggregations(name):
    import lm_eval.api.metrics as lm

    items = list(zip(REFS, SYSTEM))
    expected = {"bleu": lm.bleu, "chrf": lm.chrf, "ter": lm.ter}[name](items)
    metric = get_metric(name)
    samples = [Sample(doc_id=str(i), output_type="generate_until", target=[r], prediction=p, language="en")
               for i, (r, p) in enumerate(items)]
    assert metric.aggregate(metric.sample_stats(samples)) == expected
