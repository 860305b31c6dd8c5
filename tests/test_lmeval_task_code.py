"""Scoring task code of lm-evaluation-harness's task files (process_results, `!function` metrics,
aggregations and filters): refused without --trust-task-code, lm-eval's semantics with it.

Reference: lm-eval 0.4.13 itself (its `lm_eval.api.metrics` aggregations and its task files'
own Python), exact equality. The end-to-end numbers on a real model are in test_lmeval_scores.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402

from harness.config import load_task_config  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.metrics.base import Sample  # noqa: E402
from harness.metrics.task_code import AGGREGATIONS  # noqa: E402
from harness.task import Task  # noqa: E402

TASKS = Path(lm_eval.__file__).parent / "tasks"


@pytest.mark.parametrize("path, key", [
    ("wikitext/wikitext.yaml", "doc_to_target"),  # its first `!function`; process_results follows
    ("super_glue/cb/default.yaml", "metric_list[].aggregation"),
    ("super_glue/cb/t5-prompt.yaml", "metric_list[].metric"),
    ("bbh/zeroshot/web_of_lies.yaml", "filter_list[].filter[].function"),
])
def test_scoring_code_needs_the_trust_flag(path, key):
    """Without the flag: one line naming the file, the key and the flag; nothing is imported."""
    with pytest.raises(HarnessError) as err:
        load_task_config(TASKS / path)
    message = str(err.value)
    assert "\n" not in message and str(TASKS / path) in message and "--trust-task-code" in message
    assert f"key {key!r}" in message or (key.startswith("metric_list") and "metric_list" in message)


def test_aggregations_are_lm_evaluation_harness_s():
    """Every named aggregation equals lm-eval's own on the same per-document values."""
    from lm_eval.api.registry import get_aggregation

    rng = random.Random(0)
    lls = [-rng.uniform(0.1, 9.0) for _ in range(12)]
    items = {
        "mean": [rng.random() for _ in range(12)], "median": [rng.random() for _ in range(11)],
        "nanmean": [rng.random() for _ in range(5)] + [float("nan")], "perplexity": lls,
        "weighted_perplexity": [(ll, rng.randint(1, 30)) for ll in lls], "bits_per_byte": [(ll, rng.randint(5, 90)) for ll in lls],
        "f1": [(rng.randint(0, 1), rng.randint(0, 1)) for _ in range(20)],
        "matthews_corrcoef": [(rng.randint(0, 2), rng.randint(0, 2)) for _ in range(20)],
        "brier_score": [(rng.randint(0, 2), [0.2, 0.3, 0.5]) for _ in range(8)],
    }
    texts = [("the cat sat on the mat", "a cat sat on a mat"), ("it rains today", "it is raining today"),
             ("hello world", "hello there world")]
    for name in ("bleu", "chrf", "chrf++", "ter"):
        items[name] = texts
    for name, values in items.items():
        assert AGGREGATIONS[name](values) == pytest.approx(float(get_aggregation(name)(values)), rel=1e-12, abs=1e-12), name
    assert set(items) == set(AGGREGATIONS)


def _wikitext_task(tmp_path: Path) -> Task:
    root = tmp_path / "hub" / "EleutherAI/wikitext_document_level" / "wikitext-2-raw-v1"
    root.mkdir(parents=True)
    pages = [{"page": " = Rain = \n\n The rain @-@ fed river , it 's said , rises . \n"},
             {"page": " = Snow = \n\n Snow falls in the north ; the hills turn white . \n"}]
    for split in ("train", "validation", "test"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    config = load_task_config(TASKS / "wikitext" / "wikitext.yaml", trust_task_code=True)
    return Task(config, data_dir=str(tmp_path / "hub"))


def test_process_results_scores_as_lm_evaluation_harness(tmp_path):
    """wikitext's process_results counts the original page's words and bytes: the same values,
    per document and aggregated, as lm-eval's process_results with lm-eval's aggregations."""
    from lm_eval.api.registry import get_aggregation

    task = _wikitext_task(tmp_path)
    docs = task.docs()
    lls = [-41.5, -37.25]
    samples = [Sample(doc_id=str(i), output_type="loglikelihood_rolling", loglikelihoods=[(ll, True)]) for i, ll in enumerate(lls)]
    module = __import__("lm_eval.tasks.wikitext.preprocess_wikitext", fromlist=["process_results"])
    theirs = [module.process_results(d, [ll]) for d, ll in zip(docs, lls)]
    for metric in task.metrics:
        stats = metric.sample_stats(samples)
        assert stats == [list(t[metric.name]) for t in theirs]
        agg = {"word_perplexity": "weighted_perplexity", "byte_perplexity": "weighted_perplexity"}.get(metric.name, metric.name)
        assert metric.aggregate(stats) == get_aggregation(agg)([t[metric.name] for t in theirs])
    assert metric.higher_is_better is False
    assert any(p.endswith("wikitext/preprocess_wikitext.py") for p in task.code_files)


def test_a_failing_process_results_names_the_file_and_document(tmp_path):
    task = _wikitext_task(tmp_path)
    bad = [Sample(doc_id="d0", output_type="loglikelihood_rolling", loglikelihoods=[]),
           Sample(doc_id="d1", output_type="loglikelihood_rolling", loglikelihoods=[])]
    with pytest.raises(HarnessError, match=r"wikitext.yaml: process_results: `!function preprocess_wikitext.process_results` failed on document d0"):
        task.metrics[0].sample_stats(bad)


def test_custom_filter_class_runs_as_in_lm_evaluation_harness(tmp_path):
    """bbh's MapRegexFilter (task code, a subclass of lm-eval's Filter) maps answers as lm-eval's
    own instance of it does."""
    root = tmp_path / "hub" / "SaylorTwift/bbh" / "web_of_lies"
    root.mkdir(parents=True)
    (root / "test.jsonl").write_text(json.dumps({"input": "Does Jerry tell the truth?", "target": "No"}) + "\n")
    config = load_task_config(TASKS / "bbh" / "zeroshot" / "web_of_lies.yaml", trust_task_code=True)
    task = Task(config, data_dir=str(tmp_path / "hub"))
    pipelines = {p.name: p for p in task.filters()}
    resps = [["So Jerry does not tell the truth."], ["Yes, he tells the truth"], ["I cannot say"]]
    docs = [{}] * 3
    ours = pipelines["flexible-extract"].apply(resps, docs)
    from lm_eval.tasks.bbh.zeroshot.utils import MapRegexFilter

    step = config.filter_list[1]["filter"][0]
    theirs = MapRegexFilter(**{k: v for k, v in step.items() if k != "function"}).apply(resps, docs)
    assert ours == [r[0] for r in theirs] == ["no", "yes", "[invalid]"]
    assert any(p.endswith("bbh/zeroshot/utils.py") for p in task.code_files)


def test_exact_match_trims_nothing_in_lm_evaluation_harness_files(tmp_path):
    """lm-eval's exact_match compares the texts as they are; this project's own files keep
    `strip: true` (the documented default), and an explicit option wins either way."""
    body = ("task: em_{n}\ndataset_path: json\ndataset_kwargs: {{data_files: d.jsonl}}\ntest_split: train\n"
            "output_type: generate_until\ndoc_to_text: '{{{{q}}}}'\ndoc_to_target: '{{{{a}}}}'\n{extra}"
            "metric_list:\n  - metric: exact_match\n{option}")
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "2+2?", "a": "4 "}) + "\n")

    def score(n: str, extra: str = "", option: str = "") -> float:
        (tmp_path / f"{n}.yaml").write_text(body.format(n=n, extra=extra, option=option))
        task = Task(load_task_config(tmp_path / f"{n}.yaml"))
        inst = task.build(task.docs(), chat=None)[0]
        return task.metrics[0].sample_stats([task.sample(inst, " 4")])[0]

    assert score("lmeval") == 0.0  # lm-eval: " 4" != "4 "
    assert score("ours", extra="about: mine\n") == 1.0
    assert score("lmeval_strip", option="    strip: true\n") == 1.0


def test_a_group_override_keeps_the_member_file_s_own_conventions(tmp_path):
    """A group that sets one of this project's keys (chat_template) on an lm-eval file does not
    turn that file's exact_match into this project's stripped comparison."""
    from harness.registry import TaskRegistry

    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "2+2?", "a": "4 "}) + "\n")
    (tmp_path / "em.yaml").write_text(
        "task: em\ndataset_path: json\ndataset_kwargs: {data_files: d.jsonl}\ntest_split: train\n"
        "output_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\nmetric_list:\n  - metric: exact_match\n")
    (tmp_path / "g.yaml").write_text("group: g\ntask:\n  - {task: em, chat_template: never}\n")
    registry = TaskRegistry([str(tmp_path)])
    (config,) = registry.select(["g"])
    assert config.chat_template == "never" and config.lm_eval_format
    task = Task(config)
    inst = task.build(task.docs(), chat=None)[0]
    assert task.metrics[0].sample_stats([task.sample(inst, " 4")])[0] == 0.0
