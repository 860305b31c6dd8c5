"""Runner bookkeeping with a stand-in model (no number here is one a user reads): dedupe, the
cache keyed by fingerprint, fixed chunks, the results schema and per-sample logs."""

import json

import pytest

from harness.cache import ResponseCache
from harness.execute import execute
from harness.models.base import LanguageModel
from harness.requests import ModelInfo
from harness.runner import RunOptions, evaluate, prepare_tasks
from tests.conftest import MC_DOCS, MC_TASK, write_task


class CountingModel(LanguageModel):
    """Answers with the length of the continuation, and counts what it was asked."""

    def __init__(self, name="count", offset=0.0):
        self.name, self.offset, self.calls = name, offset, []

    def loglikelihood(self, requests):
        self.calls.extend(requests)
        return [(-len(c) + self.offset, False) for _, c in requests]

    def loglikelihood_rolling(self, texts, *, max_length=None, stride=None):
        self.calls.extend(texts)
        return [(-float(len(t)), len(t)) for t in texts]

    def generate(self, requests):
        self.calls.extend(requests)
        return [r.prompt[-5:] for r in requests]

    @property
    def fingerprint(self):
        return f"fp-{self.name}"

    @property
    def info(self):
        return ModelInfo(name=self.name, backend="test", spec=f"test:{self.name}")


@pytest.fixture
def task(tmp_path):
    write_task(tmp_path, "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS + [dict(MC_DOCS[0], id="dup")])
    (task,) = prepare_tasks(["tiny_mc"], RunOptions(include_paths=[str(tmp_path)]))
    return task


def test_requests_are_deduplicated_and_cached_per_fingerprint(task, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    instances = task.build(task.docs(), chat=None)
    model = CountingModel()
    responses, stats = execute(model, instances, cache=cache, label="x", chunk_size=3)
    assert stats.n_requests == 20 and stats.n_unique == 16 and len(model.calls) == 16
    again = CountingModel()
    responses2, stats2 = execute(again, instances, cache=cache, label="x")
    assert again.calls == [] and stats2.n_cached == 16 and responses2 == responses
    other = CountingModel(name="other", offset=1.0)  # another fingerprint never shares answers
    responses3, _ = execute(other, instances, cache=cache, label="x")
    assert len(other.calls) == 16 and responses3 != responses


def test_results_file_and_samples(task, tmp_path, monkeypatch):
    import harness.runner as runner

    monkeypatch.setattr(runner, "load_model", lambda spec, **kw: CountingModel())
    monkeypatch.setattr(runner, "check_model_specs", lambda specs: None)
    options = RunOptions(include_paths=[str(tmp_path)], output_dir=str(tmp_path / "out"), n_boot=200)
    results = evaluate(["test:count"], ["tiny_mc"], options)
    data = json.loads(open(results.path).read())
    assert data["schema_version"] == 2 and data["status"] == "complete" and data["error"] is None
    record = data["evaluations"][0]["tasks"]["tiny_mc"]
    assert {"config", "data_hash", "prompt_hash", "template_hash", "metrics", "timing", "n_samples"} <= set(record)
    acc = record["metrics"]["acc"]
    assert {"value", "stderr", "ci_low", "ci_high", "n"} <= set(acc) and acc["n"] == 5
    assert acc["name"] == "acc" and acc["filter"] is None
    typed = results.evaluations[0].tasks["tiny_mc"]
    assert typed.metrics["acc"].value == acc["value"] and typed.samples_file == record["samples_file"]
    assert data["environment"]["python"] and "torch" in data["environment"]["packages"]
    rows = [json.loads(line) for line in open(tmp_path / "out" / record["samples_file"])]
    assert [r["doc_id"] for r in rows] == ["q1", "q2", "q3", "q4", "dup"]
    assert set(rows[0]["scores"]) == {"acc", "acc_norm"}
    # the shortest choice wins under this stand-in, so accuracy is checkable by hand
    expected = sum(min(range(4), key=lambda i: (len(" " + d["choices"][i]), -i)) == d["answer"] for d in MC_DOCS + [MC_DOCS[0]])
    assert acc["value"] == pytest.approx(expected / 5)


def test_evaluate_takes_a_loaded_model_and_leaves_it_open(tmp_path):
    """As lm-evaluation-harness's simple_evaluate: a LanguageModel object instead of a spec."""
    import harness

    write_task(tmp_path, "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    model = CountingModel()
    closed = []
    model.close = lambda: closed.append(True)
    results = harness.evaluate(model, ["tiny_mc"], RunOptions(include_paths=[str(tmp_path)], output_dir=None,
                                                              n_boot=10, use_cache=False))
    assert results.evaluations[0].model.spec == "test:count" and model.calls and not closed
    assert results.evaluations[0].tasks["tiny_mc"].metrics["acc"].value is not None
    # the contracts are part of the public API
    assert harness.LanguageModel is type(model).__mro__[1] and harness.Task.__name__ == "Task"
    assert callable(harness.register_metric) and callable(harness.register_backend)
