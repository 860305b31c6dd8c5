"""The `api:` backend: against `harness serve` on the real SmolLM2 (the in-process figures through
HTTP), and its retries, timeouts, concurrency limit and key handling against a tiny fake server."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.models.api import APILanguageModel
from harness.models.api_spec import parse_spec
from harness.models.http import HTTPStatusError, RetryPolicy, ServerUnavailable
from harness.requests import GenerateRequest
from tests.conftest import MC_DOCS, MC_TASK, REPO, write_task

SECRET = "sk-harness-test-0123456789"


# -- a harness serve subprocess -------------------------------------------------------------------


def start_serve(*args: str, env: dict[str, str] | None = None, wait: float = 300) -> tuple[subprocess.Popen, str]:
    """`harness serve` on a free loopback port; returns the process and its base URL (…/v1)."""
    cmd = [sys.executable, "-m", "harness", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(wait)
    line = found[0] if found else ""
    if " on http://" not in line:
        proc.kill()
        raise RuntimeError(f"harness serve did not start within {wait} s (exit {proc.poll()}): {line!r}")
    return proc, line.rsplit(" on ", 1)[1].strip()


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def served():
    """SmolLM2 behind `harness serve`, which demands an API key; the client finds it in the env."""
    proc, url = start_serve("--model", "smollm2-135m", env={"HARNESS_SERVE_API_KEY": SECRET})
    old = os.environ.get("HARNESS_API_KEY")
    os.environ["HARNESS_API_KEY"] = SECRET
    try:
        yield url
    finally:
        stop(proc)
        if old is None:
            os.environ.pop("HARNESS_API_KEY", None)
        else:
            os.environ["HARNESS_API_KEY"] = old


@pytest.fixture(scope="module")
def api(served):
    return APILanguageModel(served, concurrency=4, retries=1, backoff=0.1)


REQUESTS = [
    ("The capital of France is", " Paris"),
    ("Question: How many legs does a spider have?\nAnswer:", " eight"),
    ("", "Hello world, this is a text with no context."),
    ("The cat sat on the ", "mat"),  # the trailing space moves to the continuation
    ("Translate into French: good morning\nFrench:", " bonjour"),
    ("1, 2, 3, 4,", " 5, 6, 7"),
    ("Rain falls from", " clouds in the sky"),
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 6,
    ("Paris is the capital and largest city of France. It is known for the Eiffel Tower, "
     "museums such as the Louvre, and its cafés. Ça va? 你好，世界。"),
    "def add(a, b):\n    return a + b\n",
]


@pytest.mark.slow
def test_loglikelihood_equals_in_process(api, hf_smollm2):
    assert api.tokenizer_mode == "server"
    remote, local = api.loglikelihood(REQUESTS), hf_smollm2.loglikelihood(REQUESTS)
    for (a, ga), (b, gb), req in zip(remote, local, REQUESTS):
        assert abs(a - b) <= 1e-4, req
        assert ga == gb, req


@pytest.mark.slow
def test_rolling_loglikelihood_within_1e_4_per_token(api, hf_smollm2):
    for window in (None, 24):  # 24: several windows per text, each conditioned on the one before
        remote = api.loglikelihood_rolling(TEXTS, max_length=window)
        local = hf_smollm2.loglikelihood_rolling(TEXTS, max_length=window)
        for (a, na), (b, nb) in zip(remote, local):
            assert na == nb
            assert abs(a - b) / nb <= 1e-4


@pytest.mark.slow
def test_text_offsets_split_like_tokens(served, hf_smollm2):
    """Without a tokenizer the split comes from the echoed text_offset: same figures."""
    text_mode = APILanguageModel(served + "?tokenizer=none", retries=1)
    assert text_mode.tokenizer_mode == "none"
    with_context = [r for r in REQUESTS if r[0]]
    for (a, ga), (b, gb) in zip(text_mode.loglikelihood(with_context), hf_smollm2.loglikelihood(with_context)):
        assert abs(a - b) <= 1e-4 and ga == gb
    with pytest.raises(HarnessError, match="needs a tokenizer"):
        text_mode.loglikelihood_rolling(TEXTS[:1])


@pytest.mark.slow
def test_generation_equals_in_process(api, hf_smollm2):
    reqs = [GenerateRequest("The capital of France is", until=("\n", "."), max_gen_toks=12),
            GenerateRequest("Count: 1, 2, 3,", until=("\n",), max_gen_toks=8)]
    assert api.generate(reqs) == hf_smollm2.generate(reqs)


@pytest.mark.slow
def test_chat_template_from_the_server_and_chat_endpoint(api, served, hf_smollm2):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert api.apply_chat_template(messages) == hf_smollm2.apply_chat_template(messages)
    by_server = APILanguageModel(served + "?chat=server", retries=1)
    prompt = by_server.apply_chat_template(messages)
    request = GenerateRequest(prompt, until=("\n",), max_gen_toks=10)
    local = hf_smollm2.generate([GenerateRequest(hf_smollm2.apply_chat_template(messages), until=("\n",), max_gen_toks=10)])
    assert by_server.generate([request]) == local
    with pytest.raises(HarnessError, match="chat_template: never"):
        by_server.loglikelihood([(prompt, " Paris")])


@pytest.mark.slow
def test_run_through_api_gives_in_process_metrics_and_no_key(api, hf_smollm2, tmp_path, caplog):
    from harness.runner import RunOptions, evaluate, prepare_tasks, run_task

    write_task(tmp_path / "tasks", "mc_api", MC_TASK.format(name="mc_api"), MC_DOCS)
    options = RunOptions(output_dir=str(tmp_path / "out"), include_paths=[str(tmp_path / "tasks")], n_boot=50,
                         model_options={"concurrency": 2})
    with caplog.at_level(logging.DEBUG):
        results = evaluate([api.spec], ["mc_api"], options)
    remote = results.to_dict()["evaluations"][0]["tasks"]["mc_api"]["metrics"]
    (task,) = prepare_tasks(["mc_api"], options)
    local, _ = run_task(hf_smollm2, task, cache=None, options=options)
    for name in ("acc", "acc_norm"):
        assert remote[name]["value"] == local.metrics[name].value
    written = "".join(p.read_text() for p in Path(tmp_path / "out").rglob("*") if p.is_file())
    assert results.evaluations[0].model.backend == "api"
    assert SECRET not in written and SECRET not in caplog.text and SECRET not in json.dumps(results.to_dict())


# -- a fake server: scripted statuses ------------------------------------------------------------


class Fake:
    """A loopback server that answers from a script; records what it was sent."""

    def __init__(self, respond: Callable[[Fake, str, dict], tuple[int, dict] | None]):
        self.respond = respond
        self.calls: list[tuple[str, dict, str]] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                self._do({})

            def do_POST(self):  # noqa: N802
                self._do(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"))

            def _do(self, body):
                with fake.lock:
                    fake.calls.append((self.path, body, self.headers.get("Authorization", "")))
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    status, answer, *headers = fake.respond(fake, self.path, body) or (404, {"error": "no route"})
                finally:
                    with fake.lock:
                        fake.inflight -= 1
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers[0] if headers else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.calls if p == path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


MODELS = {"object": "list", "data": [{"id": "fake-model", "object": "model", "max_model_len": 512}]}


def completion(text: str) -> dict:
    return {"choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]}


@pytest.fixture
def fake_factory():
    made: list[Fake] = []

    def make(respond):
        made.append(Fake(respond))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def flaky_then_ok(fake, path, body):
    if path == "/v1/models":
        return 200, MODELS
    if path == "/v1/completions":
        n = fake.count("/v1/completions")
        if n == 1:
            return 429, {"error": {"message": "slow down"}}
        if n == 2:
            return 500, {"error": {"message": "boom"}}
        return 200, completion(" Paris. And more")
    return None


def test_retries_429_and_500_with_exponential_backoff_then_succeeds(fake_factory):
    fake = fake_factory(flaky_then_ok)
    model = APILanguageModel(fake.url, retries=3, backoff=0.2, backoff_max=5)
    started = time.monotonic()
    out = model.generate([GenerateRequest("The capital of France is", until=(".",), max_gen_toks=5)])
    elapsed = time.monotonic() - started
    assert out == [" Paris"]
    assert fake.count("/v1/completions") == 3 and model.client.retries_made == 2
    assert elapsed >= 0.2 + 0.4 - 0.05  # waited 0.2 s, then 0.4 s


def test_backoff_doubles_up_to_the_cap_and_honours_retry_after():
    policy = RetryPolicy(retries=6, backoff=0.5, backoff_max=4.0)
    assert [policy.delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=100.0) == 100.0  # the server knows when it can answer again
    assert policy.delay(3, retry_after=0.2) == 0.2


def test_gives_up_with_a_clear_error_after_the_retries(fake_factory):
    fake = fake_factory(lambda f, p, b: (200, MODELS) if p == "/v1/models" else
                        (503, {"error": "overloaded"}) if p == "/v1/completions" else None)
    model = APILanguageModel(fake.url, retries=2, backoff=0.05, tokenizer="none")
    with pytest.raises(ServerUnavailable, match=r"did not answer after 3 attempt\(s\).*HTTP 503.*resumes"):
        model.generate([GenerateRequest("Hi", max_gen_toks=2)])
    assert fake.count("/v1/completions") == 3


def test_client_errors_are_not_retried(fake_factory):
    fake = fake_factory(lambda f, p, b: (200, MODELS) if p == "/v1/models" else
                        (400, {"error": {"message": "prompt too long"}}) if p == "/v1/completions" else None)
    model = APILanguageModel(fake.url, retries=4, backoff=0.05, tokenizer="none")
    with pytest.raises(HTTPStatusError, match="400: prompt too long"):
        model.generate([GenerateRequest("Hi", max_gen_toks=2)])
    assert fake.count("/v1/completions") == 1


def test_timeout_per_request_then_retry(fake_factory):
    def slow_once(fake, path, body):
        if path == "/v1/models":
            return 200, MODELS
        if fake.count("/v1/completions") == 1:
            time.sleep(1.5)
        return 200, completion(" ok")

    fake = fake_factory(slow_once)
    model = APILanguageModel(fake.url, retries=1, backoff=0.05, timeout=0.3, tokenizer="none")
    started = time.monotonic()
    assert model.generate([GenerateRequest("Hi", max_gen_toks=2)]) == [" ok"]
    assert time.monotonic() - started < 1.4 and model.client.retries_made == 1


def test_connection_refused_is_retried_then_reported():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(HarnessError, match="could not list the served models.*3 attempt"):
        APILanguageModel(f"http://127.0.0.1:{port}/v1", retries=2, backoff=0.05)
    assert time.monotonic() - started < 10


def test_concurrency_limit_bounds_requests_in_flight(fake_factory):
    def slow(fake, path, body):
        if path == "/v1/models":
            return 200, MODELS
        time.sleep(0.1)
        return 200, completion(" x")

    fake = fake_factory(slow)
    model = APILanguageModel(fake.url, concurrency=3, tokenizer="none")
    assert model.generate([GenerateRequest(f"p{i}", max_gen_toks=1) for i in range(9)]) == [" x"] * 9
    assert 2 <= fake.max_inflight <= 3


def test_no_prompt_logprobs_refuses_loglikelihood_but_generates(fake_factory):
    fake = fake_factory(lambda f, p, b: (200, MODELS) if p == "/v1/models" else
                        (200, completion(" Paris")) if p == "/v1/completions" else None)
    model = APILanguageModel(fake.url, retries=0)
    assert model.tokenizer_mode == "none"  # /tokenize answered 404
    with pytest.raises(HarnessError, match="cannot return prompt logprobs.*generation tasks still run"):
        model.loglikelihood([("The capital of France is", " Paris")])
    assert model.generate([GenerateRequest("The capital of France is", max_gen_toks=3)]) == [" Paris"]
    declared = APILanguageModel(fake.url + "?prompt_logprobs=no")
    with pytest.raises(HarnessError, match="prompt_logprobs=no"):
        declared.loglikelihood([("a", " b")])


def test_api_key_is_sent_but_never_recorded(fake_factory, monkeypatch, caplog):
    fake = fake_factory(lambda f, p, b: (200, MODELS) if p == "/v1/models" else
                        (500, {"error": "no"}) if p == "/v1/completions" else None)
    monkeypatch.delenv("HARNESS_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with caplog.at_level(logging.DEBUG):
        model = APILanguageModel(fake.url + "#fake-model", retries=1, backoff=0.01)
        with pytest.raises(HarnessError) as err:
            model.generate([GenerateRequest("Hi", max_gen_toks=2)])
    assert {auth for _, _, auth in fake.calls} == {f"Bearer {SECRET}"}
    recorded = json.dumps(model.info.to_dict()) + model.fingerprint + model.spec + str(err.value) + caplog.text
    assert SECRET not in recorded
    monkeypatch.setenv("MY_KEY", "other-key")
    APILanguageModel(fake.url, api_key_env="MY_KEY")
    assert fake.calls[-1][2] == "Bearer other-key"


def test_fingerprint_is_the_server_and_its_model_not_the_transport(fake_factory):
    respond = lambda f, p, b: (200, MODELS) if p == "/v1/models" else None  # noqa: E731
    a, b = fake_factory(respond), fake_factory(respond)
    one = APILanguageModel(a.url + "?concurrency=2&timeout=10")
    assert APILanguageModel(a.url + "#fake-model").fingerprint == one.fingerprint and one.model_id == "fake-model"
    # Two servers both calling their model "fake-model" are two models: they never share answers.
    assert APILanguageModel(b.url + "#fake-model").fingerprint != one.fingerprint
    assert APILanguageModel(a.url + "?max_length=128").fingerprint != one.fingerprint


def test_fingerprint_follows_the_served_model_behind_one_url(fake_factory):
    cards = iter([MODELS, {"object": "list", "data": [{**MODELS["data"][0], "root": "/models/other"}]}])
    fake = fake_factory(lambda f, p, b: (200, next(cards)) if p == "/v1/models" else None)
    first, second = APILanguageModel(fake.url), APILanguageModel(fake.url)
    assert first.model_id == second.model_id and first.fingerprint != second.fingerprint


def test_spec_syntax():
    base, model, options, shown = parse_spec("http://user:pw@127.0.0.1:8000/v1/?concurrency=3&timeout=9#org/model", {})
    assert (base, model, options["concurrency"], options["timeout"]) == ("http://127.0.0.1:8000/v1", "org/model", 3, 9.0)
    assert "pw" not in shown
    assert parse_spec("http://h:1/v1", {"retries": 0})[2]["retries"] == 0
    with pytest.raises(HarnessError, match="did you mean 'concurrency'"):
        parse_spec("http://h:1/v1?concurency=3", {})
    with pytest.raises(HarnessError, match="HARNESS_API_KEY"):
        parse_spec("http://h:1/v1?api_key=x", {})
    with pytest.raises(HarnessError, match="base URL"):
        parse_spec("127.0.0.1:8000", {})
