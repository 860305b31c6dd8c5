"""Task-file validation: every mistake a user can make gets one line naming the file and the fix."""

from pathlib import Path

import pytest

from harness.config import load_task_config
from harness.errors import HarnessError

GOOD = """\
task: demo
dataset_path: json
dataset_kwargs: {data_files: demo.jsonl}
test_split: train
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs: {until: "\\n", max_gen_toks: 8}
metric_list: [{metric: exact_match, ignore_case: true}]
metadata: {version: 1.0}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return load_task_config(path)


def test_valid_file_loads_with_lm_eval_keys(tmp_path):
    config = load(tmp_path, GOOD)
    assert config.task == "demo"
    assert config.generation_kwargs["until"] == ["\n"]  # a single stop string becomes a list
    assert config.metric_list[0].options == {"ignore_case": True}
    assert config.source_file.endswith("demo.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        (("doc_to_text:", "doc_to_txt:"), "unknown key 'doc_to_txt'; did you mean 'doc_to_text'"),
        (("output_type: generate_until", "output_type: generate"), "output_type 'generate' is not one of"),
        (("task: demo\n", ""), "missing required key 'task'"),
        (("metadata: {version: 1.0}", "num_fewshot: two"), "'num_fewshot' must be a non-negative integer"),
        (("exact_match, ignore_case: true", "rouge9"), "unknown metric 'rouge9'"),
        (("exact_match, ignore_case: true", "exact_match, ignore_kase: true"), "has no option 'ignore_kase'"),
        (("exact_match, ignore_case: true", "acc_norm"), "does not apply to output_type 'generate_until'"),
        (("max_gen_toks: 8", "max_tokens: 8"), "generation_kwargs has unknown key 'max_tokens'"),
        (("metadata: {version: 1.0}", "process_docs: foo"), "must be `!function module.name`"),
        (("metadata: {version: 1.0}", "dataset_kwargs: {trust_remote_code: true, script: x.py}"), "dataset_kwargs key 'script' is not a data option"),
        (("max_gen_toks: 8", "num_beams: 4"), "beam search is not supported"),
    ],
)
def test_invalid_files_name_the_field(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(HarnessError) as err:
        load(tmp_path, GOOD.replace(old, new))
    assert message in str(err.value)
    assert "demo.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_function_tag_is_refused_not_executed(tmp_path):
    text = GOOD.replace('doc_to_text: "{{question}}"', "doc_to_text: !function utils.doc_to_text")
    (tmp_path / "utils.py").write_text("raise SystemExit('task code ran')\n")
    with pytest.raises(HarnessError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert "demo.yaml" in message and "'doc_to_text'" in message and "--trust-task-code" in message
    assert "<unicode string>" not in message and "\n" not in message
    # with the flag the configuration is accepted; the code runs only when a document is rendered
    config = load_task_config(tmp_path / "demo.yaml", trust_task_code=True)
    assert str(config.doc_to_text) == "!function utils.doc_to_text"


def test_python_object_tags_cannot_run(tmp_path):
    text = GOOD.replace('doc_to_text: "{{question}}"', "doc_to_text: !!python/object/apply:os.system ['echo hi']")
    with pytest.raises(HarnessError, match="malformed YAML"):
        load(tmp_path, text)


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(HarnessError, match=r"demo.yaml: line \d+: malformed YAML"):
        load(tmp_path, GOOD + "generation_kwargs: [unclosed\n")


def test_default_metrics_per_output_type(tmp_path):
    config = load(tmp_path, GOOD.replace("metric_list: [{metric: exact_match, ignore_case: true}]\n", "")
                  .replace("generate_until", "loglikelihood_rolling").replace("generation_kwargs: {until: \"\\n\", max_gen_toks: 8}\n", ""))
    assert [m.metric for m in config.metric_list] == ["word_perplexity", "byte_perplexity", "bits_per_byte"]
