"""Registry selection and dataset sources."""

import json

import pytest

from harness.config import TaskConfig
from harness.data import load_split, read_records
from harness.errors import HarnessError
from harness.registry import TaskRegistry
from tests.conftest import MC_DOCS, MC_TASK, write_task


@pytest.fixture
def tiny_dir(tmp_path):
    write_task(tmp_path, "tiny_a", MC_TASK.format(name="tiny_a"), MC_DOCS)
    write_task(tmp_path, "tiny_b", MC_TASK.format(name="tiny_b"), MC_DOCS)
    return tmp_path


def test_select_by_name_tag_glob_and_env(tiny_dir, monkeypatch):
    registry = TaskRegistry([str(tiny_dir)])
    assert [c.task for c in registry.select(["tiny_a"])] == ["tiny_a"]
    assert [c.task for c in registry.select(["tiny"])] == ["tiny_a", "tiny_b"]  # a tag
    assert [c.task for c in registry.select(["tiny_*"])] == ["tiny_a", "tiny_b"]
    monkeypatch.setenv("HARNESS_INCLUDE_PATH", str(tiny_dir))
    assert "tiny_b" in TaskRegistry().configs


def test_unknown_task_suggests_close_names(tiny_dir):
    with pytest.raises(HarnessError, match="unknown task 'tiny_c'.*did you mean"):
        TaskRegistry([str(tiny_dir)]).select(["tiny_c"])


def test_broken_task_fails_only_when_selected(tiny_dir):
    write_task(tiny_dir, "bad", MC_TASK.format(name="bad").replace("metric: acc\n", "metric: nope\n"), MC_DOCS)
    registry = TaskRegistry([str(tiny_dir)])
    assert registry.select(["tiny_a"])
    with pytest.raises(HarnessError, match="bad.yaml: unknown metric 'nope'"):
        registry.select(["bad"])


def test_duplicate_task_names_keep_the_first_file_with_a_note(tiny_dir):
    # lm-evaluation-harness keeps the first file in path order and warns; so does the registry
    write_task(tiny_dir / "sub", "tiny_a", MC_TASK.format(name="tiny_a"), MC_DOCS)
    registry = TaskRegistry([str(tiny_dir)])
    assert any("already defined" in n for n in registry.notes)
    assert registry.select(["tiny_a"])[0].source_file.endswith("sub/tiny_a.yaml")


def test_include_path_must_exist(tmp_path):
    with pytest.raises(HarnessError, match="is not a folder"):
        TaskRegistry([str(tmp_path / "nope")])


def test_local_formats(tmp_path):
    (tmp_path / "a.csv").write_text("q,a\nx,1\ny,2\n")
    (tmp_path / "a.tsv").write_text("q\ta\nx\t1\n")
    (tmp_path / "a.txt").write_text("line one\n\nline two\n")
    (tmp_path / "a.json").write_text(json.dumps([{"q": "x"}]))
    assert read_records(tmp_path / "a.csv") == [{"q": "x", "a": "1"}, {"q": "y", "a": "2"}]
    assert read_records(tmp_path / "a.tsv") == [{"q": "x", "a": "1"}]
    assert read_records(tmp_path / "a.txt") == [{"text": "line one"}, {"text": "line two"}]
    assert read_records(tmp_path / "a.json") == [{"q": "x"}]
    (tmp_path / "bad.jsonl").write_text('{"q": 1}\n{"q": \n')
    with pytest.raises(HarnessError, match=r"bad.jsonl: line 2: invalid JSON"):
        read_records(tmp_path / "bad.jsonl")


def config(tmp_path, **kw):
    base = dict(task="t", dataset_path="json", output_type="generate_until", source_file=str(tmp_path / "t.yaml"))
    return TaskConfig(**{**base, **kw})


def test_missing_and_empty_data(tmp_path):
    with pytest.raises(HarnessError, match="data file .*nope.jsonl does not exist"):
        load_split(config(tmp_path, dataset_kwargs={"data_files": "nope.jsonl"}), "train")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(HarnessError, match="the dataset is empty"):
        load_split(config(tmp_path, dataset_kwargs={"data_files": "empty.jsonl"}), "train")
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(HarnessError, match="set test_split: train"):
        load_split(config(tmp_path, dataset_kwargs={"data_files": "d.jsonl"}), "test")
    assert load_split(config(tmp_path, dataset_kwargs={"data_files": {"test": "d.jsonl"}}), "test") == [{"a": 1}]


def test_hub_dataset_offline_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(HarnessError, match="offline.*--data-dir"):
        load_split(config(tmp_path, dataset_path="wikitext", dataset_name="wikitext-2-raw-v1"), "test")
