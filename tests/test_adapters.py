"""The adapter registry: one adapter per output type, no output-type switch elsewhere, primary
metrics, and metrics/filters/adapters that another package adds through entry points."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.adapters import adapter_names, get_adapter
from harness.config import parse_task_config
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parent.parent


def test_builtin_adapters_and_their_defaults():
    assert adapter_names()[:4] == ["loglikelihood_rolling", "loglikelihood", "multiple_choice", "generate_until"]
    assert get_adapter("multiple_choice").method == get_adapter("loglikelihood").method == "loglikelihood"
    assert get_adapter("loglikelihood_rolling").primary_metric(["byte_perplexity", "bits_per_byte"]) == "bits_per_byte"
    assert get_adapter("loglikelihood_rolling").primary_metric(["word_perplexity", "token_perplexity"]) == "word_perplexity"
    assert get_adapter("loglikelihood_rolling").primary_metric(["token_perplexity"]) == "token_perplexity"
    assert get_adapter("multiple_choice").primary_metric(["acc_norm", "acc"]) == "acc"
    assert get_adapter("generate_until").primary_metric(["rougeL", "bleu"]) == "rougeL"


def test_unknown_output_type_names_the_file_and_the_known_ones():
    raw = {"task": "t", "dataset_path": "json", "output_type": "generate", "doc_to_text": "q", "doc_to_target": "a"}
    with pytest.raises(HarnessError) as err:
        parse_task_config(raw, "tasks/t.yaml")
    assert str(err.value).startswith("tasks/t.yaml: output_type 'generate'") and "generate_until" in str(err.value)


def test_no_switch_on_output_type_outside_the_adapters():
    names = ("loglikelihood_rolling", "loglikelihood", "multiple_choice", "generate_until")
    offenders = []
    # the pipeline from task to scores, and the reports (they ask the adapter what a metric means)
    paths = [REPO / "harness" / f for f in ("execute.py", "task.py", "runner.py", "config.py", "requests.py")]
    for folder in ("metrics", "filters", "report"):
        paths += sorted((REPO / "harness" / folder).glob("*.py"))
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ("output_type ==" in line or "output_type !=" in line or "output_type\") ==" in line or "output_type\") !=" in line or "kind ==" in line) and any(f'"{x}"' in line for x in names):
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert offenders == []


def test_primary_metric_in_the_results(tmp_path, monkeypatch):
    import harness.runner as runner
    from harness.runner import RunOptions, evaluate
    from tests.conftest import MC_DOCS, MC_TASK, write_task
    from tests.test_runner import CountingModel

    write_task(tmp_path, "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    import json

    monkeypatch.setattr(runner, "load_model", lambda spec, **kw: CountingModel())
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    options = RunOptions(include_paths=[str(tmp_path)], output_dir=str(tmp_path / "out"), n_boot=20)
    results = evaluate(["test:count"], ["tiny_mc"], options)
    record = json.loads(open(results.path).read())["evaluations"][0]["tasks"]["tiny_mc"]
    assert record["primary_metric"] == "acc"
    assert {m["filter"] for m in record["metrics"].values()} == {None} and "metrics_by_filter" not in record


def test_another_package_adds_a_metric_a_filter_and_an_output_type(tmp_path):
    pkg = tmp_path / "harness_extra"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from harness.adapters import register_adapter
        from harness.adapters.generate_until import GenerateUntilAdapter
        from harness.filters import Filter, register_filter
        from harness.metrics.base import Metric, register_metric

        @register_metric
        class Length(Metric):
            name = "answer_length"
            output_types = frozenset({"generate_until", "short_answer"})
            def sample_stats(self, samples):
                return [float(len(s.prediction or "")) for s in samples]

        @register_filter("reverse")
        class Reverse(Filter):
            def apply(self, resps, docs):
                return [[r[::-1] for r in rs] for rs in resps]

        @register_adapter
        class ShortAnswer(GenerateUntilAdapter):
            output_type = "short_answer"
            default_metrics = ("answer_length",)
    '''))
    dist = tmp_path / "harness_extra-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-extra\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[harness.metrics]\nextra = harness_extra\n\n[harness.filters]\nextra = harness_extra\n\n"
        "[harness.adapters]\nextra = harness_extra\n"
    )
    script = textwrap.dedent('''
        from harness.config import parse_task_config
        from harness.filters import get_filter
        from harness.metrics.base import get_metric
        get_metric("answer_length")
        assert get_filter("reverse").apply([["ab"]], [{}]) == [["ba"]]
        raw = {"task": "t", "dataset_path": "json", "output_type": "short_answer", "doc_to_text": "q",
               "doc_to_target": "a", "filter_list": [{"name": "r", "filter": [{"function": "reverse"}, {"function": "take_first"}]}]}
        config = parse_task_config(raw, "t.yaml")
        print([m.metric for m in config.metric_list])
    ''')
    env = {"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['answer_length']"


def test_tokens_requested_and_computed(tmp_path):
    from harness.cache import ResponseCache
    from harness.execute import execute
    from harness.runner import RunOptions, prepare_tasks
    from tests.conftest import MC_DOCS, MC_TASK, write_task
    from tests.test_runner import CountingModel

    class Counted(CountingModel):
        def count_tokens(self, texts):
            return sum(len(t.split()) for t in texts)

    write_task(tmp_path, "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    (task,) = prepare_tasks(["tiny_mc"], RunOptions(include_paths=[str(tmp_path)]))
    instances = task.build(task.docs(), chat=None)
    expected = sum(len((c + x).split()) for inst in instances for c, x in inst.requests)
    cache = ResponseCache(tmp_path / "c.sqlite")
    _, first = execute(Counted(), instances[:2], cache=cache, label="x")
    _, second = execute(Counted(), instances, cache=cache, label="x")
    assert second.tokens_requested == expected
    assert second.tokens == expected - first.tokens and first.tokens == first.tokens_requested > 0
    assert second.to_dict()["tokens_computed"] == second.tokens


def test_generation_target_indexes_the_choices_when_the_task_has_them(tmp_path):
    from harness.registry import TaskRegistry
    from harness.task import Task
    from tests.conftest import write_task

    body = """\
task: gen_choice
dataset_path: json
dataset_kwargs:
  data_files: gen_choice.jsonl
test_split: train
output_type: generate_until
doc_to_text: "{{q}}"
doc_to_choice: ["yes", "no"]
doc_to_target: "{{label}}"
chat_template: never
"""
    write_task(tmp_path, "gen_choice", body, [{"q": "Is it?", "label": 1}])
    (config,) = [c for c, _ in TaskRegistry([str(tmp_path)]).select_with_limits(["gen_choice"])]
    task = Task(config)
    assert task.build(task.docs(), None)[0].target == ["no"]


def test_recorded_primary_metric_agrees_with_the_leaderboard_default():
    from harness.report.ranking import default_primary_metric

    cases = {"loglikelihood_rolling": [["word_perplexity", "byte_perplexity", "bits_per_byte"], ["token_perplexity", "word_perplexity"]],
             "loglikelihood": [["perplexity", "acc"], ["word_perplexity", "bits_per_byte"]],
             "multiple_choice": [["acc_norm", "acc"], ["acc_norm", "f1"]],
             "generate_until": [["rougeL", "bleu"], ["exact_match"]]}
    for output_type, lists in cases.items():
        for names in lists:
            assert get_adapter(output_type).primary_metric(names) == default_primary_metric(output_type, names)
