"""lm-evaluation-harness's task format on small local files: include chains, groups with
overrides, fewshot_config, doc_to_choice forms, task code behind the trust flag, template and
dataset_kwargs safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import load_task_config
from harness.errors import HarnessError
from harness.prompts import MAX_OUTPUT, render
from harness.registry import TaskRegistry
from harness.task import Task

DOCS = [{"q": f"question {i}", "opts": ["no", "yes"], "label": i % 2, "text": f"t{i}"} for i in range(8)]

BASE = """\
dataset_path: json
dataset_kwargs:
  data_files: {{train: docs.jsonl}}
test_split: train
output_type: multiple_choice
doc_to_text: "Q: {{{{q}}}}\\nA:"
doc_to_choice: "{{{{opts}}}}"
doc_to_target: label
chat_template: never
metadata: {{version: 1}}
"""


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_include_chain_the_including_file_wins(tmp_path):
    folder(tmp_path, {"_base.yaml": BASE.format(), "_mid.yaml": "include: _base.yaml\ndescription: \"mid\\n\"\nnum_fewshot: 1\n",
                      "sub/leaf.yaml": "include: ../_mid.yaml\ntask: leaf\nnum_fewshot: 2\ntask_alias: Leaf\ntag: [t1]\n"})
    config = TaskRegistry([str(tmp_path)]).config("leaf")
    assert (config.num_fewshot, config.description, config.task_alias, config.tag) == (2, "mid\n", "Leaf", ["t1"])


def test_include_of_a_missing_file_names_it(tmp_path):
    folder(tmp_path, {"a.yaml": "include: nope.yaml\ntask: a\n"})
    registry = TaskRegistry([str(tmp_path)])
    with pytest.raises(HarnessError, match=r"a.yaml: key 'include': .*nope.yaml does not exist"):
        registry.select(["a"])


def test_groups_with_names_tags_inline_overrides_and_nesting(tmp_path):
    files = {"_base.yaml": BASE.format()}
    for name in ("x1", "x2", "y1"):
        files[f"{name}.yaml"] = f"include: _base.yaml\ntask: {name}\ntag: {name[0]}_tag\n"
    files["g_inner.yaml"] = "group: inner\ntask: [y_tag]\naggregate_metric_list: [{metric: acc, weight_by_size: false}]\n"
    files["g_outer.yaml"] = (
        "group: outer\ngroup_alias: Outer\nnum_fewshot: 1\n"
        "task:\n  - x1\n  - {task: x2, num_fewshot: 3}\n  - inner\n"
        "  - {group: inline_g, task: [x1]}\n"
        "aggregate_metric_list: [{metric: acc, aggregation: mean, weight_by_size: true}]\n"
    )
    registry = TaskRegistry([str(folder(tmp_path, files))])
    chosen = {s.config.task: s for s in registry.selection(["outer"])}
    assert set(chosen) == {"x1", "x2", "y1"}  # the inline group's x1 is the same task
    assert chosen["x1"].config.num_fewshot == 1 and chosen["x2"].config.num_fewshot == 3
    assert chosen["y1"].config.num_fewshot == 1 and chosen["y1"].groups == ["inner", "outer"]
    assert registry.groups["outer"].alias == "Outer"
    assert registry.groups_of(["x1", "x2", "y1"])["outer"] == ["x1", "x2", "y1", "x1"]


def test_fewshot_config_first_n_samples_and_own_templates(tmp_path):
    task_file = BASE.format() + (
        "task: fs\nnum_fewshot: 2\ndescription: \"Answer.\\n\\n\"\ntarget_delimiter: ' => '\n"
        "fewshot_config:\n  sampler: first_n\n  samples: [{q: s1, a: 'yes', opts: ['no', 'yes']}, {q: s2, a: 'no', opts: ['no', 'yes']}, {q: s3, a: 'no', opts: ['no', 'yes']}]\n"
        "  doc_to_text: 'EX {{q}}'\n  doc_to_target: '{{a}}'\n  fewshot_delimiter: ' | '\n"
    )
    folder(tmp_path, {"fs.yaml": task_file})
    task = Task(TaskRegistry([str(tmp_path)]).config("fs"))
    # lm-eval: description, then each shot as text + fewshot target_delimiter (inherited) +
    # answer + fewshot_delimiter, then the question with no delimiter
    assert task.context(task.docs()[0], 0, None) == "Answer.\n\nEX s1 => yes | EX s2 => no | Q: question 0\nA:"


@pytest.mark.parametrize("choice, expected", [
    ("[\"no\", \"yes\"]", ["no", "yes"]),          # a YAML list
    ("opts", ["no", "yes"]),                       # a bare field name
    ("\"{{opts}}\"", ["no", "yes"]),               # a template giving a list literal
    ("\"['a', 'b']\"", ["a", "b"]),                # a string holding a list literal
    ("{0: zero, 1: one}", ["zero", "one"]),       # a mapping: its values
])
def test_doc_to_choice_forms(tmp_path, choice, expected):
    text = BASE.format().replace('doc_to_choice: "{{opts}}"', f"doc_to_choice: {choice}") + "task: c\n"
    folder(tmp_path, {"c.yaml": text})
    task = Task(TaskRegistry([str(tmp_path)]).config("c"))
    assert task.choices(task.docs()[1]) == expected and task.gold_index(task.docs()[1], expected) == 1


UTILS = """\
def process_docs(dataset):
    return dataset.map(lambda d: {"q": d["q"].upper()})

def doc_to_text(doc):
    return "CODE " + doc["q"]
"""


def test_task_code_runs_only_with_the_flag_and_is_recorded(tmp_path):
    text = BASE.format() + "task: coded\nprocess_docs: !function utils.process_docs\ndoc_to_text: !function utils.doc_to_text\n"
    folder(tmp_path, {"coded.yaml": text, "utils.py": UTILS})
    plain = TaskRegistry([str(tmp_path)])
    with pytest.raises(HarnessError) as err:
        plain.select(["coded"])
    assert "coded.yaml" in str(err.value) and "key 'doc_to_text'" in str(err.value) and "--trust-task-code" in str(err.value)
    task = Task(TaskRegistry([str(tmp_path)], trust_task_code=True).config("coded"))
    assert task.context(task.docs()[0], 0, None) == "CODE QUESTION 0"
    assert list(task.code_files) == [str((tmp_path / "utils.py").resolve())]
    assert len(task.code_files[str((tmp_path / "utils.py").resolve())]) == 64


def test_function_on_a_key_lm_eval_does_not_allow_is_refused(tmp_path):
    text = BASE.format() + "task: bad\ndescription: !function utils.doc_to_text\n"
    folder(tmp_path, {"bad.yaml": text, "utils.py": UTILS})
    with pytest.raises(HarnessError, match="key 'description'.*is not allowed there"):
        load_task_config(tmp_path / "bad.yaml", trust_task_code=True)


@pytest.mark.parametrize("template, message", [
    ("{{ opts.append(3) }}", "unsafe"),
    ("{{ 'x' * 10**8 }}", "exceeds"),
    ("{% include 'other.yaml' %}", "no loader"),
    ("{{ 1/0 }}", "division by zero"),
    ("{% for i in range(90000) %}{{ q * 50 }}{% endfor %}", "exceeds"),
    ("{{ 7 ** 99999 }}", "too large"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "exceed 1,000,000 items"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template error"),
])
def test_template_errors_are_one_line_naming_file_and_key(template, message):
    doc = {"opts": [1, 2], "q": "question"}
    with pytest.raises(HarnessError) as err:
        render(template, doc, where="t.yaml: doc_to_text")
    assert str(err.value).startswith("t.yaml: doc_to_text: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    assert doc == {"opts": [1, 2], "q": "question"}  # the document is never changed
    assert MAX_OUTPUT < 10**8


def test_lm_eval_jinja_filter_regex_replace():
    assert render("{{ q | regex_replace('\\\\s+', ' ') }}", {"q": "a  b\n c"}, where="x") == "a b c"


@pytest.mark.parametrize("kwargs, message", [
    ("{data_files: {train: docs.jsonl}, script: load.py}", "dataset_kwargs key 'script' is not a data option"),
    ("{data_files: {train: /etc/hostname}}", "outside the task's folder"),
])
def test_dataset_kwargs_are_data_only(tmp_path, kwargs, message):
    text = BASE.format().replace("dataset_kwargs:\n  data_files: {train: docs.jsonl}", f"dataset_kwargs: {kwargs}") + "task: d\n"
    folder(tmp_path, {"d.yaml": text})
    with pytest.raises(HarnessError, match=message):
        Task(load_task_config(tmp_path / "d.yaml")).docs()


def test_trust_remote_code_is_dropped_without_the_flag(tmp_path):
    text = BASE.format().replace("data_files: {train: docs.jsonl}", "data_files: {train: docs.jsonl}\n  trust_remote_code: true") + "task: r\n"
    folder(tmp_path, {"r.yaml": text})
    plain = load_task_config(tmp_path / "r.yaml")
    assert "trust_remote_code" not in plain.dataset_kwargs and "--trust-task-code" in plain.notes[0]
    assert load_task_config(tmp_path / "r.yaml", trust_task_code=True).dataset_kwargs["trust_remote_code"] is True


def test_lm_eval_generation_keys_and_defaults(tmp_path):
    text = (BASE.format().replace("output_type: multiple_choice\n", "").replace('doc_to_choice: "{{opts}}"\n', "")
            + "task: g\ndataset_kwargs: null\ndataset_revision: abc123\ngeneration_kwargs: {max_new_tokens: 7, num_beams: 1}\n")
    config = load_task_config(folder(tmp_path, {"g.yaml": text}) / "g.yaml")
    assert config.output_type == "generate_until"  # lm-eval's default
    assert config.generation_kwargs == {"max_gen_toks": 7, "until": ["\n\n"]}
    assert config.dataset_kwargs == {} and config.to_dict()["dataset_revision"] == "abc123"


def test_group_scores_follow_aggregate_metric_list(tmp_path):
    """lm-evaluation-harness 0.4.13's Group.aggregate: over every leaf task (nested groups
    flattened), weighted by documents, or the plain mean with weight_by_size: false."""
    from harness.runner import group_aggregates

    files = {"_base.yaml": BASE.format()}
    for name in ("x1", "x2", "y1", "y2"):
        files[f"{name}.yaml"] = f"include: _base.yaml\ntask: {name}\ntag: {name[0]}_tag\n"
    files["g_inner.yaml"] = "group: inner\ntask: [y_tag]\naggregate_metric_list: [{metric: acc, weight_by_size: false}]\n"
    files["g_outer.yaml"] = "group: outer\ntask: [x1, x2, inner]\naggregate_metric_list: [{metric: acc, weight_by_size: false}]\n"
    registry = TaskRegistry([str(folder(tmp_path, files))])
    names = ["x1", "x2", "y1", "y2"]
    from harness.results import TaskResult

    record = lambda v, n: TaskResult.from_dict("t", {"metrics": {"acc": {"value": v, "n": n}}})  # noqa: E731
    tasks = {"x1": record(0.2, 10), "x2": record(0.4, 30), "y1": record(1.0, 10), "y2": record(0.0, 90)}
    out, _ = group_aggregates(tasks, registry.groups_of(names), registry.group_plans(names))
    assert out["inner"].metrics["acc"].value == pytest.approx(0.5)  # mean of 1.0 and 0.0
    assert out["outer"].metrics["acc"].value == pytest.approx((0.2 + 0.4 + 1.0 + 0.0) / 4)
    files["g_outer.yaml"] = files["g_outer.yaml"].replace("weight_by_size: false", "weight_by_size: true")
    registry = TaskRegistry([str(folder(tmp_path, files))])
    out, _ = group_aggregates(tasks, registry.groups_of(names), registry.group_plans(names))
    assert out["outer"].metrics["acc"].value == pytest.approx((0.2 * 10 + 0.4 * 30 + 1.0 * 10 + 0.0 * 90) / 140)


def test_a_run_that_executed_task_code_records_it_with_hashes(tmp_path, monkeypatch):
    """Results bookkeeping (a stand-in model: no number here is one a user reads)."""
    import hashlib

    import harness.runner as runner
    from tests.test_runner import CountingModel

    text = BASE.format() + "task: coded\nprocess_docs: !function utils.process_docs\n"
    folder(tmp_path, {"coded.yaml": text, "utils.py": UTILS})
    monkeypatch.setattr(runner, "load_model", lambda spec, **kw: CountingModel())
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    options = runner.RunOptions(include_paths=[str(tmp_path)], output_dir=None, n_boot=50)
    with pytest.raises(HarnessError, match="--trust-task-code"):
        runner.evaluate(["test:count"], ["coded"], options)
    options.trust_task_code = True
    results = runner.evaluate(["test:count"], ["coded"], options).to_dict()
    record = results["evaluations"][0]["tasks"]["coded"]
    utils = (tmp_path / "utils.py").resolve()
    assert record["task_code"] == {str(utils): hashlib.sha256(utils.read_bytes()).hexdigest()}
    assert results["options"]["trust_task_code"] is True
    assert record["config"]["process_docs"] == "!function utils.process_docs"


def test_a_local_folder_as_dataset_path_stays_inside_the_task_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    text = BASE.format().replace("dataset_path: json", f"dataset_path: {outside}") + "task: p\n"
    text = text.replace("dataset_kwargs:\n  data_files: {train: docs.jsonl}\n", "")
    (tmp_path / "tasks").mkdir()
    folder(tmp_path / "tasks", {"p.yaml": text})
    with pytest.raises(HarnessError, match="dataset_path names .*outside the task's folder"):
        Task(load_task_config(tmp_path / "tasks" / "p.yaml")).docs()
