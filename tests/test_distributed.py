"""Data parallel: two CPU processes (gloo) give the results of one, and only rank 0 writes.

The processes get torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) from the test, with a
file rendezvous ($HARNESS_DIST_INIT_METHOD) and gloo on the loopback interface: torchrun's own
rendezvous store listens on every interface, which these tests must not open. The same run under
torchrun itself is `test_under_torchrun`, on when HARNESS_TEST_TORCHRUN=1.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import MC_DOCS, MC_TASK, REPO, write_task

TASKS = ["knowledge_mc", "lm_en", "continuation_en"]  # loglikelihood, rolling and generation
RUN = ["run", "--model", "smollm2-135m", "--tasks", *TASKS, "--limit", "4", "--batch-size", "4", "--bootstrap", "50"]


def env(cache, **extra) -> dict[str, str]:
    return {**os.environ, "HARNESS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", **extra}


def single(tmp_path, name):
    out = tmp_path / name
    done = subprocess.run([sys.executable, "-m", "harness", *RUN, "--output", str(out)], cwd=REPO,
                          env=env(tmp_path / f"cache-{name}"), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def launch_two(tmp_path, name, cache, args) -> list[str]:
    """`python ARGS` as ranks 0 and 1 of a gloo group on loopback; their stdout."""
    rendezvous = tmp_path / f"rendezvous-{name}"
    procs = []
    for rank in range(2):
        extra = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                 "HARNESS_DIST_INIT_METHOD": f"file://{rendezvous}", "GLOO_SOCKET_IFNAME": "lo"}
        procs.append(subprocess.Popen([sys.executable, *args], cwd=REPO, env=env(cache, **extra),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    return [stdout for stdout, _ in outputs]


def two_ranks(tmp_path, name, cache):
    out = tmp_path / name
    launch_two(tmp_path, name, cache, ["-m", "harness", *RUN, "--output", str(out)])
    return out


SHARD_SCRIPT = """
import json, sys
from harness.execute import execute
from harness.runner import RunOptions, prepare_tasks
from tests.test_runner import CountingModel
(task,) = prepare_tasks(["tiny_mc"], RunOptions(include_paths=[sys.argv[1]]))
model = CountingModel()
responses, stats = execute(model, task.build(task.docs(), chat=None), cache=None, label="x", chunk_size=4)
print(json.dumps({"calls": len(model.calls), "responses": responses, "computed": stats.n_computed}))
from harness import distributed
distributed.finish(0)
"""


def test_each_rank_computes_a_share_and_every_rank_gets_every_answer(tmp_path):
    """Bookkeeping with a stand-in model: 16 requests, 8 per rank, all 16 answers on both."""
    from harness.execute import execute
    from harness.runner import RunOptions, prepare_tasks
    from tests.test_runner import CountingModel

    write_task(tmp_path / "tasks", "tiny_mc", MC_TASK.format(name="tiny_mc"), MC_DOCS)
    (task,) = prepare_tasks(["tiny_mc"], RunOptions(include_paths=[str(tmp_path / "tasks")]))
    expected, _ = execute(CountingModel(), task.build(task.docs(), chat=None), cache=None, label="x")
    outputs = launch_two(tmp_path, "shard", tmp_path / "cache", ["-c", SHARD_SCRIPT, str(tmp_path / "tasks")])
    ranks = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert [r["calls"] for r in ranks] == [8, 8]
    assert all(r["responses"] == expected and r["computed"] == 16 for r in ranks)


def load(out):
    (path,) = out.glob("*.json")  # exactly one results file: rank 0's
    results = json.loads(path.read_text())
    tasks = results["evaluations"][0]["tasks"]
    rows = {name: [json.loads(line) for line in (out / t["samples_file"]).read_text().splitlines()]
            for name, t in tasks.items()}
    return tasks, rows


def assert_same(a, b):
    tasks_a, rows_a = a
    tasks_b, rows_b = b
    assert set(tasks_a) == set(tasks_b) == set(TASKS)
    for name in TASKS:
        assert tasks_a[name]["n_samples"] == tasks_b[name]["n_samples"]
        for metric, value in tasks_a[name]["metrics"].items():
            other = tasks_b[name]["metrics"][metric]["value"]
            assert other == pytest.approx(value["value"], rel=1e-5, abs=1e-6), (name, metric)
        for x, y in zip(rows_a[name], rows_b[name], strict=True):
            assert x["doc_id"] == y["doc_id"]
            if "output" in x:
                assert x["output"] == y["output"]
            else:
                for r, s in zip(x["responses"], y["responses"], strict=True):
                    assert abs(r[0] - s[0]) <= 1e-4 and r[1] == s[1]


@pytest.mark.slow
def test_two_processes_give_the_results_of_one(tmp_path):
    reference = load(single(tmp_path, "one"))
    cache = tmp_path / "cache-two"
    parallel = load(two_ranks(tmp_path, "two", cache))
    assert_same(reference, parallel)
    n_unique = sum(t["timing"]["n_unique"] for t in parallel[0].values())
    assert sum(t["timing"]["n_computed"] for t in parallel[0].values()) == n_unique
    with sqlite3.connect(cache / "responses.sqlite") as db:  # rank 0 cached every answer, once
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == n_unique

    again = load(two_ranks(tmp_path, "again", cache))  # rank 0 reads the cache, the others get it
    assert_same(reference, again)
    assert all(t["timing"]["n_computed"] == 0 for t in again[0].values())


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HARNESS_TEST_TORCHRUN") != "1",
                    reason="torchrun's rendezvous store listens on all interfaces; set HARNESS_TEST_TORCHRUN=1 to allow it")
def test_under_torchrun(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "harness", *RUN, "--output", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env(tmp_path / "cache-torchrun", GLOO_SOCKET_IFNAME="lo"),
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(load(single(tmp_path, "one")), load(out))
