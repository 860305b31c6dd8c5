"""The typed results model: version 1 files read unchanged, version 2 round trips, per-filter
metrics as fields, records/to_pandas for notebooks; and no hidden process-wide state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.results import SCHEMA_VERSION, MetricResult, RunResults, TaskResult

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "results" / "runs").glob("*.json"))
BENCH = sorted((REPO / "results" / "bench").glob("*.json"))


def _metric_values(data: dict) -> dict:
    """(model, task, metric) -> the metric record, read from the raw JSON of either version."""
    return {(e["model"]["spec"], t, m): {k: r.get(k) for k in ("value", "stderr", "ci_low", "ci_high", "n")}
            for e in data["evaluations"] for t, task in e.get("tasks", {}).items()
            for m, r in task["metrics"].items()}


@pytest.mark.parametrize("path", COMMITTED + BENCH, ids=lambda p: p.name)
def test_committed_files_read_and_round_trip_with_every_number_unchanged(path, tmp_path):
    raw = json.loads(path.read_text())
    results = RunResults.load(path)
    assert results.schema_version == raw["schema_version"] and results.complete == bool(raw.get("finished"))
    copy = results.save(tmp_path / path.name)
    again = json.loads(copy.read_text())
    assert again["schema_version"] == SCHEMA_VERSION and again["status"] in ("complete", "partial")
    assert _metric_values(again) == _metric_values(raw)
    assert RunResults.load(copy).to_dict() == results.to_dict()
    if raw["environment"].get("git_commit", "").endswith("-dirty"):  # version 1 marked it on the commit
        assert again["environment"]["git_dirty"] is True
        assert again["environment"]["git_commit"] == raw["environment"]["git_commit"].removesuffix("-dirty")
    for e_raw, e in zip(raw["evaluations"], results.evaluations):
        assert e.model.spec == e_raw["model"]["spec"] and e.efficiency == (e_raw.get("efficiency") or {})
        for name, group in e_raw.get("groups", {}).items():
            for metric, m in group.items():
                assert e.groups[name].metrics[metric].value == m["value"]
                assert e.groups[name].metrics[metric].tasks == m["tasks"]


def test_unknown_keys_survive_and_newer_versions_are_refused(tmp_path):
    path = tmp_path / "r.json"
    data = {"schema_version": 2, "kind": "evaluation", "run_id": "r", "status": "complete", "future": [1],
            "evaluations": [{"model": {"spec": "hf:m", "future_model": 1}, "tasks": {"t": {
                "n_samples": 2, "timing": {"n_computed": 2, "tokens_requested": 9}, "future_task": "x",
                "metrics": {"acc": {"name": "acc", "value": 0.5, "n": 2, "future_metric": True}}}}}]}
    path.write_text(json.dumps(data))
    results = RunResults.load(path)
    task = results.evaluations[0].tasks["t"]
    assert task.timing["tokens_requested"] == 9 and task.other == {"future_task": "x"}
    out = results.to_dict()
    assert out["future"] == [1] and out["evaluations"][0]["model"]["future_model"] == 1
    assert out["evaluations"][0]["tasks"]["t"]["metrics"]["acc"]["future_metric"] is True
    model = results.evaluations[0].model
    assert model.get("spec") == "hf:m" and model.get("future_model") == 1 and model.get("dtype", "?") == "?"
    task.primary_metric = "acc"
    assert RunResults.from_dict(results.to_dict()).evaluations[0].tasks["t"].primary_metric == "acc"
    path.write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(HarnessError, match="newer than this harness reads"):
        RunResults.load(path)
    path.write_text(json.dumps({**data, "status": "finished-ish"}))
    with pytest.raises(HarnessError, match="unknown status"):
        RunResults.load(path)


def _filtered_run() -> RunResults:
    from harness.results import ModelEvaluation, ModelRecord

    task = TaskResult("gsm8k", n_samples=4)
    task.add(MetricResult("exact_match", 0.25, n=4, filter="strict-match"))
    task.add(MetricResult("exact_match", 0.5, n=4, filter="flexible-extract"))
    task.add(MetricResult("acc", 0.75, n=4))
    return RunResults("r", status="complete", evaluations=[ModelEvaluation(ModelRecord(spec="hf:m", name="m"),
                                                                            {"gsm8k": task})])


def test_per_filter_metrics_are_fields_not_names_to_parse(tmp_path):
    results = _filtered_run()
    path = results.save(tmp_path / "r.json")
    task = RunResults.load(path).evaluations[0].tasks["gsm8k"]
    strict = task.metric("exact_match", "strict-match")
    assert (strict.name, strict.filter, strict.value) == ("exact_match", "strict-match", 0.25)
    assert task.metric("exact_match", "flexible-extract").value == 0.5 and task.metric("exact_match") is None
    stored = json.loads(path.read_text())["evaluations"][0]["tasks"]["gsm8k"]["metrics"]
    assert {(m["name"], m["filter"]) for m in stored.values()} == {
        ("exact_match", "strict-match"), ("exact_match", "flexible-extract"), ("acc", None)}
    rows = [(r["metric"], r["filter"], r["value"]) for r in results.records()]
    assert rows == [("exact_match", "strict-match", 0.25), ("exact_match", "flexible-extract", 0.5), ("acc", None, 0.75)]
    from harness.report.collect import columns, load_entries
    from harness.report.report_tables import report_records

    entries = load_entries([path])
    cols = columns(entries, metrics=["exact_match"])  # the name selects every filter of the metric
    assert [(c.name, c.filter) for c in cols] == [("exact_match", "strict-match"), ("exact_match", "flexible-extract")]
    assert [(r["metric"], r["filter"]) for r in report_records(entries, cols)] == [
        ("exact_match[strict-match]", "strict-match"), ("exact_match[flexible-extract]", "flexible-extract")]


def test_records_and_to_pandas(monkeypatch):
    results = _filtered_run()
    records = results.records()
    assert len(records) == 3 and records[2] | {} == {
        "run_id": "r", "status": "complete", "model": "hf:m", "model_name": "m", "backend": None, "n_params": None,
        "dtype": None, "level": "task", "task": "gsm8k", "metric": "acc", "filter": None, "value": 0.75,
        "stderr": None, "ci_low": None, "ci_high": None, "n": 4, "higher_is_better": True, "n_samples": 4}
    pd = pytest.importorskip("pandas")
    frame = results.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["value"]) == [0.25, 0.5, 0.75]
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(HarnessError, match="pip install pandas"):
        results.to_pandas()


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_results_module_never_touches_the_umask_and_files_follow_it(tmp_path):
    code = f"""
import os
os.umask(0o027)
calls = []
real = os.umask
os.umask = lambda mask: calls.append(mask) or real(mask)
import harness.results, harness.report.collect
from pathlib import Path
harness.results.write_json(Path({str(tmp_path)!r}) / "r.json", {{"a": 1}})
assert calls == [], calls
print(oct(os.stat(Path({str(tmp_path)!r}) / "r.json").st_mode & 0o777))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0o640"


def test_the_pytest_plugin_and_the_package_import_nothing_heavy():
    code = """
import sys
import harness, harness.testing
heavy = [m for m in ("harness.runner", "torch", "transformers", "numpy", "harness.report.compare") if m in sys.modules]
assert not heavy, heavy
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr


def test_evaluate_leaves_the_process_cache_directory_alone(tmp_path, monkeypatch):
    import harness.cache as cache
    import harness.runner as runner
    from harness.runner import RunOptions, evaluate
    from tests.conftest import MC_DOCS, MC_TASK, write_task
    from tests.test_runner import CountingModel

    write_task(tmp_path / "tasks", "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    monkeypatch.setattr(runner, "load_model", lambda spec, **kw: CountingModel())
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    before = cache.cache_dir()
    evaluate(["x"], ["tiny_mc"], RunOptions(include_paths=[str(tmp_path / "tasks")], output_dir=None, n_boot=10,
                                            cache_dir=str(tmp_path / "mine")))
    assert cache.cache_dir() == before and (tmp_path / "mine" / "responses.sqlite").is_file()


def test_environment_records_the_commit_and_whether_the_tree_was_clean():
    from harness.environment import environment, git_state

    env = environment()
    commit, dirty = git_state()
    if commit is None:
        pytest.skip("not a git checkout")
    assert env["git_commit"] == commit and len(commit) == 40 and env["git_dirty"] is dirty
    assert isinstance(dirty, bool)


def _script_copy(tmp_path: Path) -> Path:
    """A git repository holding scripts/results.sh and a stand-in setup.sh that records it ran."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "results.sh").write_text((REPO / "scripts" / "results.sh").read_text())
    (repo / "scripts" / "setup.sh").write_text("echo setup-ran > setup.log; exit 3\n")
    (repo / ".gitignore").write_text("setup.log\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return repo


def test_reference_results_script_refuses_a_dirty_tree_and_skips_the_cache(tmp_path):
    text = (REPO / "scripts" / "results.sh").read_text()
    runs = [line for line in text.splitlines() if line.strip().startswith("$h run")]
    assert runs and all("--no-cache" in line for line in runs)
    repo = _script_copy(tmp_path)
    (repo / "scripts" / "setup.sh").write_text((repo / "scripts" / "setup.sh").read_text() + "# edited\n")
    done = subprocess.run(["bash", "scripts/results.sh"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "uncommitted changes" in done.stderr and not (repo / "setup.log").exists()
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--", "."], check=True)
    (repo / "results" / "runs").mkdir(parents=True)
    (repo / "results" / "runs" / "old.json").write_text("{}")  # what the script replaces does not count
    done = subprocess.run(["bash", "scripts/results.sh"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert (repo / "setup.log").exists() and done.returncode == 3  # past the check, into (stand-in) setup


def test_the_notebook_example_in_docs_runs():
    text = (REPO / "docs" / "results.md").read_text()
    block = text.split("## In a notebook", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    pytest.importorskip("pandas")
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=1200, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.split()[0] in {e.model.spec for e in RunResults.load(COMMITTED[0]).evaluations}


def test_regression_checks_compute_their_answers_unless_told_otherwise(tmp_path, monkeypatch):
    import harness.runner as runner
    from harness.testing import run_evaluation
    from tests.conftest import MC_DOCS, MC_TASK, write_task
    from tests.test_runner import CountingModel

    write_task(tmp_path / "tasks", "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    models = []
    monkeypatch.setattr(runner, "load_model", lambda spec, **kw: models.append(CountingModel()) or models[-1])
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))

    def computed(**kw) -> int:
        path = run_evaluation("x", "tiny_mc", tmp_path / "out", include_paths=[str(tmp_path / "tasks")], n_boot=10, **kw)
        return RunResults.load(path).evaluations[0].tasks["tiny_mc"].timing["n_computed"]

    assert computed(use_stale_cache=True) == 16  # fills the cache
    assert computed() == 16 and len(models[-1].calls) == 16  # by default: computed again
    assert computed(use_stale_cache=True) == 0


def test_a_metric_stored_under_its_bare_name_with_a_filter_field_keeps_its_key():
    data = {"n_samples": 2, "metrics": {"exact_match": {"name": "exact_match", "filter": "strict-match", "value": 0.5},
                                        "exact_match[flexible]": {"name": "exact_match", "filter": "flexible", "value": 1.0}}}
    task = TaskResult.from_dict("t", data)
    assert list(task.metrics) == ["exact_match", "exact_match[flexible]"]
    assert task.metric("exact_match").value == 0.5 and task.metric("exact_match", "strict-match").value == 0.5
    assert task.metric("exact_match", "flexible").value == 1.0 and task.metric("exact_match", "other") is None
    assert TaskResult.from_dict("t", task.to_dict()).to_dict() == task.to_dict()
