"""The `api:` client under load, against a scripted loopback server: it waits out Retry-After,
lowers its requests in flight on 429 and raises them again, stops at the run's retry budget (and
reports the count), and caches every answer the moment it arrives, so a server dying in the middle
of a chunk loses nothing it had answered."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from harness.models.api import APILanguageModel
from harness.models.http import ServerUnavailable
from harness.requests import GenerateRequest
from tests.conftest import REPO, write_task
from tests.test_api_backend import MODELS, completion, fake_factory  # noqa: F401 - the fixture

GEN_TASK = """\
task: gen
dataset_path: json
dataset_kwargs:
  data_files: gen.jsonl
test_split: train
output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{target}}"
chat_template: never
generation_kwargs: {until: ["\\n"], max_gen_toks: 4, temperature: 0.0, do_sample: false}
metric_list:
  - metric: exact_match
"""


def test_retry_after_is_waited_out(fake_factory):
    def busy_once(fake, path, body):
        if path == "/v1/models":
            return 200, MODELS
        if fake.count("/v1/completions") == 1:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "1.5"}
        return 200, completion(" ok")

    fake = fake_factory(busy_once)
    model = APILanguageModel(fake.url, backoff=0.01, tokenizer="none")
    started = time.monotonic()
    assert model.generate([GenerateRequest("Hi", max_gen_toks=2)]) == [" ok"]
    assert time.monotonic() - started >= 1.45  # not the 0.01 s backoff
    assert model.info.extra["retries"] == 1 and model.info.extra["rate_limited"] == 1


def test_rate_limits_shrink_the_requests_in_flight_then_they_grow_back(fake_factory):
    def limited(fake, path, body):
        if path == "/v1/models":
            return 200, MODELS
        if path != "/v1/completions":
            return None
        time.sleep(0.05)
        if fake.count("/v1/completions") <= 8:
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}
        return 200, completion(" x")

    fake = fake_factory(limited)
    model = APILanguageModel(fake.url, concurrency=8, retries=10, tokenizer="none")
    model.generate([GenerateRequest(f"p{i}", max_gen_toks=1) for i in range(8)])
    # 8 rate limits: 8 * 0.8**8 = 1.3, one request at a time; then +1 per `limit` successes in a row
    assert model.client.limit < 6
    assert model.info.extra["concurrency_now"] < 6 and model.info.extra["rate_limited"] == 8
    fake.max_inflight = 0
    model.generate([GenerateRequest(f"q{i}", max_gen_toks=1) for i in range(6)])
    assert fake.max_inflight < 6  # still careful just after the rate limits
    model.generate([GenerateRequest(f"r{i}", max_gen_toks=1) for i in range(120)])
    assert model.client.limit == 8  # grown back after successes


def test_the_retry_budget_is_for_the_whole_run(fake_factory):
    fake = fake_factory(lambda f, p, b: (200, MODELS) if p == "/v1/models" else
                        (503, {"error": "down"}) if p == "/v1/completions" else None)
    model = APILanguageModel(fake.url, retries=50, backoff=0.01, retry_budget=4, tokenizer="none")
    with pytest.raises(ServerUnavailable, match="budget of 4 retries.*resumes"):
        model.generate([GenerateRequest(f"p{i}", max_gen_toks=1) for i in range(3)])
    assert model.client.retries_made == 4 and fake.count("/v1/completions") <= 3 + 4


def cached_outputs(cache) -> int:
    with sqlite3.connect(cache / "responses.sqlite") as db:
        return db.execute("SELECT count(*) FROM responses").fetchone()[0]


def run_cli(url: str, tasks, cache, out) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", "--model", f"api:{url}?retries=1&backoff=0.01&tokenizer=none",
         "--tasks", "gen", "--include-path", str(tasks), "--output", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_a_server_dying_mid_chunk_loses_no_answer_it_gave(fake_factory, tmp_path):
    answered = 11  # of one 32-request chunk

    def dies(fake, path, body):
        if path == "/v1/models":
            return 200, MODELS
        if path != "/v1/completions":
            return None
        if fake.count("/v1/completions") > answered:
            return 503, {"error": "the server is gone"}
        return 200, completion(" " + body["prompt"].split()[-1])

    docs = [{"prompt": f"Echo {i}", "target": str(i)} for i in range(20)]
    write_task(tmp_path / "tasks", "gen", GEN_TASK, docs)
    cache = tmp_path / "cache"
    fake = fake_factory(dies)
    done = run_cli(fake.url, tmp_path / "tasks", cache, tmp_path / "out1")
    assert done.returncode == 2, done.stderr
    assert "answers already received are cached" in done.stderr.strip().splitlines()[-1]
    assert cached_outputs(cache) == answered
    assert not list((tmp_path / "out1").glob("*.json"))

    fake.respond = lambda f, p, b: (200, MODELS) if p == "/v1/models" else (
        200, completion(" " + b["prompt"].split()[-1])) if p == "/v1/completions" else None  # the server is back, on the same address
    done = run_cli(fake.url, tmp_path / "tasks", cache, tmp_path / "out2")
    assert done.returncode == 0, done.stderr
    (results,) = (tmp_path / "out2").glob("*.json")
    task = json.loads(results.read_text())["evaluations"][0]["tasks"]["gen"]
    assert task["timing"]["n_cached"] == answered and task["timing"]["n_computed"] == 20 - answered
