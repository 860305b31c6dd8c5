"""Contexts longer than the model are cut from the left as lm-evaluation-harness does, and the
results say how many were cut, per task (the real scratch decoder with a 48-token window)."""

import pytest

from tests.conftest import MC_TASK, write_task

pytestmark = pytest.mark.slow


def test_truncated_requests_are_counted_per_task(tmp_path, caplog):
    from harness.runner import RunOptions, evaluate

    long_question = "Read this carefully. " * 40 + "What is the capital of France?"
    docs = [{"id": "long", "question": long_question, "choices": ["Berlin", "Paris"], "answer": 1},
            {"id": "short", "question": "Two plus two?", "choices": ["four", "five"], "answer": 0}]
    write_task(tmp_path, "cut_mc", MC_TASK.format(name="cut_mc"), docs)
    options = RunOptions(include_paths=[str(tmp_path)], output_dir=None, use_cache=False, n_boot=10,
                         model_options={"max_length": 48})
    with caplog.at_level("WARNING"):
        results = evaluate(["scratch:smollm2-135m"], ["cut_mc"], options)
    task = results.evaluations[0].tasks["cut_mc"]
    # the long question's two choices are cut, the short one's fit
    assert task.other["truncated_requests"] == {"loglikelihood": 2}
    assert any("cut_mc" in r.getMessage() and "cut from the left" in r.getMessage() for r in caplog.records)
