"""Metric defects that gave wrong numbers: each test fails on the earlier code."""

import math
import random

import pytest

from harness.config import parse_task_config
from harness.metrics.base import get_metric
from harness.metrics.stats import summarize
from harness.task import Task
from tests.conftest import write_task

LL_TASK = """\
task: capitals
dataset_path: json
dataset_kwargs:
  data_files: capitals.jsonl
test_split: train
output_type: loglikelihood
doc_to_text: "The capital of {{country}} is"
doc_to_target: "{{' ' + capital}}"
target_delimiter: ""
chat_template: auto
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
"""


def _chat(messages):
    return "<|user|>" + messages[-1]["content"] + "<|assistant|>"


def test_word_perplexity_counts_the_target_not_its_delimiter_with_or_without_chat(tmp_path):
    from harness.registry import TaskRegistry

    docs = [{"country": "France", "capital": "Paris"}, {"country": "Peru", "capital": "Lima city"}]
    write_task(tmp_path, "capitals", LL_TASK, docs)
    (config,) = [c for c, _ in TaskRegistry([str(tmp_path)]).select_with_limits(["capitals"])]
    task = Task(config)
    metric = get_metric("word_perplexity")
    for chat in (None, _chat):
        instances = task.build(task.docs(), chat)
        assert [i.requests[0][1] for i in instances] == ([" Paris", " Lima city"] if chat is None else ["Paris", "Lima city"])
        samples = [task.sample(inst, [(-3.0, True)]) for inst in instances]
        # " Paris" is one word and "Lima city" two: exp(6 / 3), in both settings
        assert metric.aggregate(metric.sample_stats(samples)) == pytest.approx(math.exp(6.0 / 3))


FEWSHOT_TASK = """\
task: noid
dataset_path: json
dataset_kwargs:
  data_files: noid.jsonl
test_split: train
fewshot_split: train
num_fewshot: 3
output_type: generate_until
doc_to_text: "Q: {{q}}"
doc_to_target: "{{a}}"
chat_template: never
"""


def test_fewshot_never_shows_the_document_itself_when_it_has_no_id(tmp_path):
    from harness.registry import TaskRegistry

    docs = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(4)]
    write_task(tmp_path, "noid", FEWSHOT_TASK, docs)
    (config,) = [c for c, _ in TaskRegistry([str(tmp_path)]).select_with_limits(["noid"])]
    task = Task(config)
    for i, inst in enumerate(task.build(task.docs(), None)):
        assert inst.context.count(f"question {i}") == 1 and inst.context.endswith(f"Q: question {i}")
        assert all(f"question {j}" in inst.context for j in range(4))  # the three others


def _corpus(seed=0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 12))) for _ in range(60)]


@pytest.mark.parametrize("name", ["distinct_1", "distinct_2"])
def test_corpus_distinct_ci_holds_its_own_value(name):
    from harness.metrics.base import Sample

    metric = get_metric(name)
    samples = [Sample(doc_id=str(i), output_type="generate_until", prediction=p) for i, p in enumerate(_corpus())]
    stats = metric.sample_stats(samples)
    result = summarize(metric, stats, n_boot=500, seed=1)
    assert result.ci_low <= result.value <= result.ci_high
    assert result.ci_high - result.ci_low > 0
    # the fast leave-one-out equals recomputing the corpus value without each response
    brute = [metric.aggregate(stats[:i] + stats[i + 1 :]) for i in range(len(stats))]
    assert metric.leave_one_out(stats) == pytest.approx(brute, abs=1e-15)
    n = len(brute)
    mean = sum(brute) / n
    assert result.stderr == pytest.approx(math.sqrt((n - 1) / n * sum((b - mean) ** 2 for b in brute)), rel=1e-12)


def test_response_mode_distinct_keeps_the_bootstrap():
    from harness.metrics.base import Sample

    metric = get_metric("distinct_1", mode="response")
    samples = [Sample(doc_id=str(i), output_type="generate_until", prediction=p) for i, p in enumerate(_corpus())]
    assert metric.leave_one_out(metric.sample_stats(samples)) is None


def test_loglikelihood_accuracy_needs_no_output_type_switch():
    from harness.metrics.base import Sample

    s = Sample(doc_id="d", output_type="loglikelihood", loglikelihoods=[(-1.0, True)])
    assert get_metric("acc").sample_stats([s]) == [1.0]
    raw = {"task": "t", "dataset_path": "json", "output_type": "loglikelihood", "doc_to_text": "q", "doc_to_target": "a"}
    assert [m.metric for m in parse_task_config(raw, "t.yaml").metric_list] == ["perplexity", "acc"]
