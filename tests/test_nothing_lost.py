"""Nothing lost, nothing escapes: run ids and results files, partial runs, checks before any model
loads, and paths built from names (a stand-in model: no number here is one a user reads)."""

from __future__ import annotations

import datetime as dt
import json
import os
import types
from pathlib import Path

import pytest

import harness.runner as runner
from harness.cli import main
from harness.errors import HarnessError
from harness.preflight import check_model_spec, reserve_run
from harness.report.collect import columns, load_entries
from harness.report.report_tables import render_report
from harness.results import RunResults
from harness.runner import RunOptions, evaluate
from tests.conftest import MC_DOCS, MC_TASK, write_task
from tests.test_runner import CountingModel


@pytest.fixture
def tasks_dir(tmp_path):
    folder = tmp_path / "tasks"
    write_task(folder, "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    return folder


@pytest.fixture
def stand_in(monkeypatch):
    """Every spec loads a CountingModel named after it, except specs starting with `fail`."""
    loaded = []

    def load(spec, **_):
        if spec.startswith("fail"):
            raise HarnessError(f"cannot load {spec}")
        loaded.append(spec)
        return CountingModel(spec.replace(":", "-"))

    monkeypatch.setattr(runner, "load_model", load)
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    return loaded


def options(tasks_dir, out, **kw):
    return RunOptions(include_paths=[str(tasks_dir)], output_dir=str(out), n_boot=20, **kw)


class _Frozen(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)


def test_two_runs_in_the_same_second_keep_both_files(tasks_dir, tmp_path, stand_in, monkeypatch):
    monkeypatch.setattr(runner, "dt", types.SimpleNamespace(datetime=_Frozen, timezone=dt.timezone))
    out = tmp_path / "out"
    first = evaluate(["a"], ["tiny_mc"], options(tasks_dir, out))
    second = evaluate(["a"], ["tiny_mc"], options(tasks_dir, out))
    assert first.run_id != second.run_id and first.path != second.path
    assert first.run_id == "20260102T030405Z_a" and second.run_id == "20260102T030405Z_a-2"
    for run in (first, second):
        stored = RunResults.load(run.path)
        assert stored.run_id == run.run_id and stored.complete
        (task,) = stored.evaluations[0].tasks.values()
        assert task.samples_path(out).is_file() and task.samples_file.startswith(run.run_id + "/")


def test_a_run_never_overwrites_a_file_it_did_not_create(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "20260102T030405Z_a.json").write_text("someone else's results\n")
    (out / "20260102T030405Z_a-2").mkdir()  # a samples folder left behind blocks that id too
    folder = reserve_run(out, "20260102T030405Z_a")
    assert folder.run_id == "20260102T030405Z_a-3" and folder.samples_dir.is_dir()
    assert not folder.results_path.exists()  # created at the first save, not before
    folder.save({"run_id": folder.run_id})
    folder.save({"run_id": folder.run_id, "again": True})  # its own file: replaced
    assert json.loads(folder.results_path.read_text()) == {"run_id": folder.run_id, "again": True}
    assert (out / "20260102T030405Z_a.json").read_text() == "someone else's results\n"
    other = reserve_run(out, "20260102T030405Z_b")
    other.results_path.write_text("written by something else meanwhile\n")
    with pytest.raises(HarnessError, match="refusing to overwrite"):
        other.save({"run_id": other.run_id})
    assert other.results_path.read_text() == "written by something else meanwhile\n"


def test_a_later_model_failing_leaves_a_partial_file_every_reader_flags(tasks_dir, tmp_path, stand_in, capsys):
    out = tmp_path / "out"
    with pytest.raises(HarnessError, match="cannot load fail:second") as err:
        evaluate(["first", "fail:second"], ["tiny_mc"], options(tasks_dir, out))
    (path,) = out.glob("*.json")
    assert f"results so far are in {path}, marked partial" in str(err.value)
    data = json.loads(path.read_text())
    assert data["status"] == "partial" and data["error"] == "cannot load fail:second" and data["finished"] is None
    results = RunResults.load(path)
    assert not results.complete and [e.model.spec for e in results.evaluations] == ["test:first"]
    capsys.readouterr()
    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{path}: PARTIAL run") and "cannot load fail:second" in shown
    entries = load_entries([path])
    assert "PARTIAL run" in capsys.readouterr().err and entries[0].partial
    assert "not a complete run" in render_report(entries, columns(entries), "markdown")
    assert main(["leaderboard", str(path)]) == 0
    captured = capsys.readouterr()
    assert "not a complete run" in captured.out and "PARTIAL run" in captured.err


def test_a_run_killed_midway_reads_as_unfinished(tasks_dir, tmp_path, stand_in, monkeypatch):
    out = tmp_path / "out"
    seen = []

    def peek(spec, task, record):  # the file as a kill at this moment would leave it
        (path,) = out.glob("*.json")
        seen.append(RunResults.load(path))

    evaluate(["a"], ["tiny_mc"], options(tasks_dir, out), on_task_done=peek)
    assert seen[0].status == "running" and "has not finished" in seen[0].status_note()


def test_nothing_computed_leaves_no_file(tasks_dir, tmp_path, stand_in):
    out = tmp_path / "new" / "out"
    with pytest.raises(HarnessError):
        evaluate(["fail:first"], ["tiny_mc"], options(tasks_dir, out))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("spec, message", [
    ("hff:smollm2-135m", "unknown backend 'hff'"),
    ("scratch:", "names no model"),
    ("scratch:/no/such/model.gguf", "does not exist"),
    ("hf:./no-such-folder", "unknown model"),
])
def test_every_spec_is_checked_before_any_model_loads(tasks_dir, tmp_path, monkeypatch, spec, message):
    loaded = []
    monkeypatch.setattr(runner, "load_model", lambda s, **_: loaded.append(s) or CountingModel())
    out = tmp_path / "out"
    with pytest.raises(HarnessError, match=message):
        evaluate(["smollm2-135m", spec], ["tiny_mc"], options(tasks_dir, out))
    assert loaded == [] and not out.exists()


def test_good_specs_pass_the_check_without_loading(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"not read by the check")
    for spec in ("smollm2-135m", "scratch:smollm2-135m", "llamacpp:gemma3-270m", f"scratch:{tmp_path}/m.gguf",
                 "hf:some-org/some-model", "api:http://127.0.0.1:9/v1"):
        check_model_spec(spec)


@pytest.mark.parametrize("make", ["file", "under_a_file"])
def test_an_unusable_output_is_one_line_before_any_model_loads(tasks_dir, tmp_path, monkeypatch, make):
    loaded = []
    monkeypatch.setattr(runner, "load_model", lambda s, **_: loaded.append(s) or CountingModel())
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if make == "file" else blocker / "sub"
    with pytest.raises(HarnessError) as err:
        evaluate(["smollm2-135m"], ["tiny_mc"], options(tasks_dir, out))
    assert "--output" in str(err.value) and "\n" not in str(err.value) and loaded == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_is_one_line_before_any_model_loads(tasks_dir, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(runner, "load_model", lambda s, **_: loaded.append(s) or CountingModel())
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(HarnessError, match="permission denied"):
            evaluate(["smollm2-135m"], ["tiny_mc"], options(tasks_dir, out))
    finally:
        out.chmod(0o700)
    assert loaded == [] and list(out.iterdir()) == []


def test_bench_checks_specs_and_output_before_measuring(tmp_path):
    from harness.benchmark.suite import benchmark

    with pytest.raises(HarnessError, match="unknown backend 'hff'"):
        benchmark(["llamacpp:smollm2-135m", "hff:x"], output_dir=tmp_path / "b", progress=None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HarnessError, match="--output .* is a file"):
        benchmark(["llamacpp:smollm2-135m"], output_dir=blocker, progress=None)
    assert not (tmp_path / "b").exists()


def test_a_task_name_cannot_write_outside_the_output(tmp_path, stand_in):
    folder = tmp_path / "deep" / "tasks"
    name = "z/../../../escaped"
    write_task(folder, "evil", MC_TASK.format(name="evil").replace("task: evil", f'task: "{name}"')
               .replace("evil.jsonl", "data.jsonl"))
    (folder / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in MC_DOCS))
    out = tmp_path / "deep" / "out"
    results = evaluate(["a"], [name], options(folder, out))
    task = results.evaluations[0].tasks[name]
    written = [p for p in tmp_path.rglob("*.jsonl") if p.parent != folder]
    assert written == [task.samples_path(out)] and out in written[0].parents
    assert not (tmp_path / "escaped.jsonl").exists() and "/" not in task.samples_file.split("/", 1)[1]


def test_readers_never_follow_a_samples_file_out_of_the_results_folder(tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"doc_id": "s", "prompt": "TOP-SECRET-PROMPT", "target": "x", "scores": {}}) + "\n")
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    paths = []
    for i, rel in enumerate(["../secret.jsonl", str(secret)]):
        metric = {"value": 0.5, "n": 1, "higher_is_better": True}
        data = {"schema_version": 1, "kind": "evaluation", "run_id": f"r{i}", "finished": "2026-01-01",
                "evaluations": [{"model": {"spec": f"hf:m{i}"},
                                 "tasks": {"t": {"n_samples": 1, "metrics": {"acc": metric}, "samples_file": rel}}}]}
        paths.append(results_dir / f"r{i}.json")
        paths[-1].write_text(json.dumps(data))
    entries = load_entries(paths)
    assert [e.samples_path("t") for e in entries] == [None, None]
    page = render_report(entries, columns(entries), "html")
    assert "TOP-SECRET-PROMPT" not in page
    with pytest.raises(HarnessError, match="inside the results folder"):
        RunResults.load(paths[0]).samples("t")
    from harness.testing import store_baseline

    with pytest.raises(HarnessError, match="outside the results folder"):
        store_baseline(paths[1], tmp_path / "baseline.json")


def test_run_results_are_checked_to_stay_in_their_folder_when_written(tmp_path):
    from harness.preflight import RunFolder

    folder = RunFolder(tmp_path, "run")
    rel = folder.samples_file("hf:../../x", "../../../y")
    assert rel.startswith("run/") and (tmp_path / rel).resolve().parent == (tmp_path / "run").resolve()
    again = folder.samples_file("hf:../../x", "../../../y")
    assert again != rel  # the same names twice (or two names with one slug) never share a file
    assert Path(tmp_path / again).parent == Path(tmp_path / rel).parent
