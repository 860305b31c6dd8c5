"""Answer filters against lm-evaluation-harness's own filter classes (lm_eval/filters, the pinned
lm-eval package), the filter_list key, repeats, and metrics reported per filter."""

import json
import random

import pytest

from harness.config import parse_task_config
from harness.errors import HarnessError
from harness.filters import FilterPipeline, filter_names, get_filter
from harness.runner import RunOptions, evaluate
from tests.conftest import write_task

RESPONSES = [
    ["The answer is 42.\n#### 42", "so #### -3,5 then #### 7", "nothing here"],
    ["  (B) because ", "I pick Paris.", "answer: C"],
    ["#### 1.5", "#### 1.5", "#### 2"],
    ["", "Person: Ada Lovelace\nLocation: London, none", "ORG: ACME $$ date: 1990"],
]
DOCS = [{"choices": ["Paris", "Berlin", "Guilty", "Guilty of Romance"]}] * len(RESPONSES)

CASES = [
    ("take_first", {}),
    ("take_first_k", {"k": 2}),
    ("majority_vote", {}),
    ("regex", {}),
    ("regex", {"regex_pattern": r"(\-?[0-9\.\,]+)", "group_select": -1}),
    ("regex", {"regex_pattern": r"#### (\-?[0-9]+)|answer: ([A-Z])", "fallback": "none"}),
    ("remove_whitespace", {}),
    ("lowercase", {}),
    ("uppercase", {}),
    ("map", {"mapping_dict": {"#### 1.5": "one and a half"}, "default_value": "?"}),
    ("multi_choice_regex", {"regex_pattern": r"(\([A-D]\))", "ignore_case": True, "ignore_punctuation": True}),
    ("multi_choice_regex", {"regex_pattern": r"zzz", "regexes_to_ignore": [r"\bI pick\b"]}),
    ("format_span", {}),
]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_filter_equals_lm_evaluation_harness(name, options):
    from lm_eval.api.registry import get_filter as lm_get_filter
    import lm_eval.filters  # noqa: F401  (registers lm-eval's built-in filters)

    expected = list(lm_get_filter(name)(**options).apply([list(r) for r in RESPONSES], DOCS))
    ours = get_filter(name, **options).apply([list(r) for r in RESPONSES], DOCS)
    assert ours == expected


def test_pipeline_on_random_text_equals_lm_evaluation_harness():
    from lm_eval.filters import build_filter_ensemble
    from lm_eval.api.instance import Instance

    rng = random.Random(0)
    words = ["####", "12", "-4", "3.5", "x", "The", "answer", "(A)", "\n", "  "]
    resps = [[" ".join(rng.choice(words) for _ in range(rng.randint(0, 8))) for _ in range(3)] for _ in range(200)]
    steps = [["regex", {"regex_pattern": r"#### (\-?[0-9\.\,]+)"}], ["majority_vote", None], ["take_first", None]]
    instances = [Instance("generate_until", {}, ("", {}), i) for i in range(len(resps))]
    for inst, r in zip(instances, resps):
        inst.resps = r
    build_filter_ensemble("maj", steps).apply(instances)
    ours = FilterPipeline("maj", [get_filter(f, **(kw or {})) for f, kw in steps]).apply(resps, [{}] * len(resps))
    assert ours == [inst.filtered_resps["maj"] for inst in instances]


def test_every_lm_eval_builtin_named_in_the_brief_is_registered():
    assert {"take_first", "regex", "remove_whitespace", "multi_choice_regex", "lowercase", "uppercase", "map",
            "take_first_k", "majority_vote", "format_span"} <= set(filter_names())


def _config(filter_list, **extra):
    raw = {"task": "t", "dataset_path": "json", "output_type": "generate_until", "doc_to_text": "q",
           "doc_to_target": "a", "filter_list": filter_list, **extra}
    return parse_task_config(raw, "tasks/t.yaml")


def test_unknown_filter_is_one_line_naming_the_file_and_the_known_filters():
    with pytest.raises(HarnessError) as err:
        _config([{"name": "x", "filter": [{"function": "regexp"}]}])
    message = str(err.value)
    assert "\n" not in message and message.startswith("tasks/t.yaml") and "'regexp'" in message
    assert "take_first" in message and "majority_vote" in message


@pytest.mark.parametrize("bad", [
    {"name": "x"},
    [{"name": "x", "filter": "take_first"}],
    [{"name": "x", "filter": [{"function": "regex", "regex_pattern": "("}]}],
    [{"name": "x", "filter": [{"function": "take_first", "k": 2}]}],
    [{"name": "x", "filter": [{"function": "take_first"}]}, {"name": "x", "filter": []}],
])
def test_bad_filter_list_is_one_line(bad):
    with pytest.raises(HarnessError) as err:
        _config(bad)
    assert "\n" not in str(err.value) and str(err.value).startswith("tasks/t.yaml")


def test_filter_list_only_on_generated_answers():
    with pytest.raises(HarnessError, match="filter_list"):
        parse_task_config({"task": "t", "dataset_path": "json", "output_type": "multiple_choice", "doc_to_text": "q",
                           "doc_to_target": "0", "doc_to_choice": ["a"], "filter_list": [{"name": "x", "filter": []}]},
                          "t.yaml")


def test_pipeline_that_leaves_several_answers_is_an_error():
    from harness.adapters import Instance
    from harness.task import Task

    task = Task(_config([{"name": "k", "filter": [{"function": "take_first_k", "k": 2}]}], repeats=3))
    (pipe,) = task.filters()
    kept = pipe.apply([["a", "b", "c"]], [{}])
    assert kept == [["a", "b"]]
    inst = Instance("d0", 0, task.adapter, [], "q", ["a"])
    with pytest.raises(HarnessError, match="take_first or majority_vote"):
        task.sample(inst, kept[0])
    assert task.sample(inst, ["a"]).prediction == "a"  # majority_vote's one-element list


GSM_DOCS = [
    {"id": "g1", "question": "2+2?", "answer": "4"},
    {"id": "g2", "question": "3+4?", "answer": "7"},
    {"id": "g3", "question": "10-1?", "answer": "9"},
]
GSM_TASK = """\
task: tiny_gsm
dataset_path: json
dataset_kwargs:
  data_files: tiny_gsm.jsonl
test_split: train
output_type: generate_until
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: "{{answer}}"
chat_template: never
repeats: 3
generation_kwargs:
  do_sample: true
  temperature: 1.0
metric_list:
  - metric: exact_match
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9]+)"
      - function: take_first
  - name: maj
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9]+)"
      - function: majority_vote
      - function: take_first
"""


def test_repeats_and_metrics_per_filter(tmp_path, monkeypatch):
    """A stand-in model answers by the request's seed, so the bookkeeping (three distinct samples
    per document, one score per pipeline) is checkable by hand."""
    import harness.runner as runner
    from harness.adapters.generate_until import _seed
    from tests.test_runner import CountingModel

    answers = {"g1": ["#### 5", "#### 4", "#### 4"], "g2": ["#### 7", "#### 1", "#### 1"], "g3": ["x", "#### 9", "#### 9"]}
    by_seed = {_seed(1234, doc if r == 0 else f"{doc}:{r}"): a[r] for doc, a in answers.items() for r in range(3)}
    seen: list[int] = []

    class Sampler(CountingModel):
        def generate(self, requests):
            seen.extend(r.seed for r in requests)
            return [by_seed[r.seed] for r in requests]

    write_task(tmp_path, "tiny_gsm", GSM_TASK, GSM_DOCS)
    monkeypatch.setattr(runner, "load_model", lambda spec, **kw: Sampler())
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    options = RunOptions(include_paths=[str(tmp_path)], output_dir=str(tmp_path / "out"), n_boot=50, use_cache=False)
    results = evaluate(["test:count"], ["tiny_gsm"], options)
    assert sorted(seen) == sorted(by_seed)  # each repeat is its own sample, asked once
    record = json.loads(open(results.path).read())["evaluations"][0]["tasks"]["tiny_gsm"]
    assert record["metrics"]["exact_match"]["filter"] == "strict-match"
    by_filter = record["metrics_by_filter"]
    assert by_filter["strict-match"]["exact_match"]["value"] == pytest.approx(1 / 3)  # g2 first answer right
    assert by_filter["maj"]["exact_match"]["value"] == pytest.approx(2 / 3)  # g1 and g3 by vote
    assert by_filter["maj"]["exact_match"]["filter"] == "maj"
    rows = [json.loads(x) for x in open(tmp_path / "out" / record["samples_file"])]
    assert rows[0]["outputs"] == ["#### 5", "#### 4", "#### 4"]
    assert rows[0]["filters"]["maj"] == {"answer": "4", "scores": {"exact_match": 1.0}}
    assert rows[0]["filters"]["strict-match"]["answer"] == "5"
    assert rows[2]["filters"]["strict-match"]["answer"] == "[invalid]"
