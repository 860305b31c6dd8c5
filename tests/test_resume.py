"""An evaluation killed with SIGKILL resumes from the cache: nothing finished is recomputed and
the results are identical to an uninterrupted run."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import MC_TASK, REPO, write_task

pytestmark = pytest.mark.slow


def docs(n):
    out = []
    for i in range(n):
        a, b = 3 + i, 11 + 2 * i
        choices = [str(a + b), str(a + b + 1), str(a * b), str(abs(a - b))]
        out.append({"id": f"sum-{i}", "question": f"A shop sold {a} apples in the morning and {b} apples in the "
                    f"afternoon. How many apples did it sell that day in total?", "choices": choices, "answer": 0})
    return out


def run(task_dir, cache, out, *extra):
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "harness", "run", "--model", "smollm2-135m", "--include-path", str(task_dir),
           "--tasks", "sums", "--output", str(out), "--batch-size", "4", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cached_rows(cache):
    path = cache / "responses.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def task_record(out):
    (path,) = [p for p in out.glob("*.json")]
    return json.loads(path.read_text())["evaluations"][0]["tasks"]["sums"]


def test_kill_9_then_rerun_recomputes_nothing_finished(tmp_path):
    task_dir = tmp_path / "tasks"
    write_task(task_dir, "sums", MC_TASK.format(name="sums"), docs(48))  # 192 requests, 6 chunks
    cache = tmp_path / "cache"
    first = run(task_dir, cache, tmp_path / "out1")
    # a wait until enough is cached, not a speed limit: a loaded machine only takes longer
    deadline = time.time() + 1800
    while cached_rows(cache) < 64 and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, "the run finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = cached_rows(cache)
    assert 64 <= done_before < 192
    assert not list((tmp_path / "out1").glob("*.json"))  # no results file for a run that never finished a task

    second = run(task_dir, cache, tmp_path / "out2")
    assert second.wait(timeout=1800) == 0, second.stderr.read()
    resumed = task_record(tmp_path / "out2")
    assert resumed["timing"]["n_cached"] == done_before
    assert resumed["timing"]["n_computed"] == 192 - done_before

    fresh = run(task_dir, tmp_path / "cache-fresh", tmp_path / "out3", "--no-cache")
    assert fresh.wait(timeout=1800) == 0, fresh.stderr.read()
    reference = task_record(tmp_path / "out3")
    assert resumed["metrics"] == reference["metrics"]
    rows = lambda out, rec: [json.loads(x)["responses"] for x in open(out / rec["samples_file"])]  # noqa: E731
    assert rows(tmp_path / "out2", resumed) == rows(tmp_path / "out3", reference)
