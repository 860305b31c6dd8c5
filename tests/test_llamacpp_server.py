"""The `api:` backend against a real peer: llama.cpp's OpenAI-compatible server (llama-cpp-python,
server extra) on loopback with the SmolLM2 GGUF. Generation only: in llama-cpp-python 0.3.36 the
prompt logprobs that echo returns are wrong (FIELD-NOTES), so loglikelihood is tested against
`harness serve` instead (tests/test_api_backend.py).

Faults: the server killed in the middle of a run -> retries, then a one-line error; the server
started again -> the same command finishes from the cache, nothing lost or duplicated.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python lacks its server extra: pip install 'llama-cpp-python[server]'")

from harness.models.api import APILanguageModel  # noqa: E402
from harness.models.zoo import ZOO  # noqa: E402
from harness.requests import GenerateRequest  # noqa: E402
from tests.conftest import REPO, write_task  # noqa: E402

pytestmark = pytest.mark.slow

N_DOCS = 80  # three chunks of 32 requests: the kill lands after the first one is cached
GEN_TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files: {name}.jsonl
test_split: train
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
chat_template: never
generation_kwargs: {{until: ["\\n"], max_gen_toks: 12, temperature: 0.0, do_sample: false}}
metric_list:
  - metric: exact_match
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama(port: int) -> subprocess.Popen:
    gguf = str(ZOO["smollm2-135m"].path())
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2-135m",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--verbose", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp's server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama.cpp's server did not answer within 120 s")


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def port():
    return free_port()


@pytest.fixture(scope="module")
def llama(port):
    proc = start_llama(port)
    yield proc
    kill(proc)


def test_generation_end_to_end(llama, port):
    model = APILanguageModel(f"http://127.0.0.1:{port}/v1#smollm2-135m", concurrency=2, retries=2, backoff=0.2)
    assert model.tokenizer_mode == "none" and model.chat_template is None  # no /tokenize, no /tokenizer_info
    reqs = [GenerateRequest("The capital of France is", until=("\n",), max_gen_toks=12),
            GenerateRequest("1, 2, 3, 4, 5,", until=("\n",), max_gen_toks=8),
            GenerateRequest("Once upon a time", until=(".",), max_gen_toks=16)]
    first = model.generate(reqs)
    assert all(isinstance(t, str) and t.strip() for t in first), first
    assert "Paris" in first[0]
    assert "6" in first[1]
    assert "." not in first[2] and "\n" not in first[0]  # cut before the stop sequences
    assert model.generate(reqs) == first  # greedy: the same text again


def cached_rows(cache) -> int:
    path = cache / "responses.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def harness_run(port, task_dir, cache, out, *extra) -> subprocess.Popen:
    spec = f"api:http://127.0.0.1:{port}/v1?concurrency=2&retries=3&backoff=0.2#smollm2-135m"
    cmd = [sys.executable, "-m", "harness", "run", "--model", spec, "--include-path", str(task_dir), "--tasks", "gen",
           "--output", str(out), "--cache-dir", str(cache), "--bootstrap", "20", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def samples(out) -> list[dict]:
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())["evaluations"][0]["tasks"]["gen"]
    rows = [json.loads(line) for line in (out / record["samples_file"]).read_text().splitlines()]
    return record, rows


def test_server_killed_mid_run_then_restarted_resumes_from_the_cache(llama, port, tmp_path):
    docs = [{"id": f"d{i}", "prompt": f"Question {i}: what number comes after {i}?\nAnswer:", "target": str(i + 1)}
            for i in range(N_DOCS)]
    write_task(tmp_path / "tasks", "gen", GEN_TASK.format(name="gen"), docs)
    cache = tmp_path / "cache"

    first = harness_run(port, tmp_path / "tasks", cache, tmp_path / "out1")
    deadline = time.monotonic() + 1200
    while cached_rows(cache) < 32 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, "the run finished before the server could be killed"
    kill(llama)  # the module's server: the test below starts its own
    try:
        _, stderr = first.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        first.kill()
        raise
    assert first.returncode == 2
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert error and "did not answer after 4 attempt(s)" in error[-1] and "resumes" in error[-1], stderr[-2000:]
    assert "retry 1 of 3" in stderr  # the retries were logged
    done = cached_rows(cache)
    assert 32 <= done < N_DOCS
    assert not list((tmp_path / "out1").glob("*.json"))

    restarted = start_llama(port)
    try:
        second = harness_run(port, tmp_path / "tasks", cache, tmp_path / "out2")
        _, stderr = second.communicate(timeout=600)
        assert second.returncode == 0, stderr[-2000:]
        record, rows = samples(tmp_path / "out2")
        assert record["timing"]["n_cached"] == done and record["timing"]["n_computed"] == N_DOCS - done
        assert len(rows) == N_DOCS and len({r["doc_id"] for r in rows}) == N_DOCS  # none lost, none twice
        assert cached_rows(cache) == N_DOCS

        reference = harness_run(port, tmp_path / "tasks", tmp_path / "cache-ref", tmp_path / "out3", "--no-cache")
        _, stderr = reference.communicate(timeout=600)
        assert reference.returncode == 0, stderr[-2000:]
        _, expected = samples(tmp_path / "out3")
        assert [(r["doc_id"], r["output"]) for r in rows] == [(r["doc_id"], r["output"]) for r in expected]
    finally:
        kill(restarted)
