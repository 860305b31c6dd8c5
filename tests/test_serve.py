"""`harness serve` under hostile-but-fair clients, on the real SmolLM2: both completion endpoints
refuse what cannot fit the context (400, naming the limit), a long generation leaves the server
answering other clients, a generation stops when its client leaves or the deadline passes, and
`stream: true` answers with server-sent events."""

from __future__ import annotations

import copy
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.serve import make_server
from harness.serve_work import Cancelled
from tests.conftest import REPO

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"  # greedy SmolLM2 counts on without an end


class Watched:
    """The real model, with a record of how each generate call ended."""

    def __init__(self, model):
        self.model = copy.copy(model)  # shares the weights; generate is wrapped on this copy only
        self.ended: list[str] = []
        self.started = threading.Event()
        inner = model.generate

        def generate(requests):
            self.started.set()
            try:
                out = inner(requests)
            except Cancelled:
                self.ended.append("cancelled")
                raise
            self.ended.append("finished")
            return out

        self.model.generate = generate


@contextmanager
def serving(model, **kwargs) -> Iterator[tuple[str, int]]:
    server = make_server(model, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def watched(hf_smollm2):
    return Watched(hf_smollm2)


def post(address, path: str, body: dict, timeout: float = 300) -> tuple[int, dict | str]:
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read().decode()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(raw) if kind.startswith("application/json") else raw
    finally:
        conn.close()


def open_request(address, path: str, body: dict) -> socket.socket:
    """Send a request and return the socket without reading the answer."""
    sock = socket.create_connection(address)
    data = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


@pytest.mark.slow
def test_chat_endpoint_checks_the_context_like_completions(hf_smollm2):
    context = hf_smollm2.max_length
    with serving(hf_smollm2) as address:
        for path, base in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
                           ("/v1/completions", {"prompt": "Hi"})):
            status, answer = post(address, path, {**base, "max_tokens": context})
            assert status == 400 and f"context of {context} tokens" in answer["error"]["message"], (path, answer)
            status, answer = post(address, path, {**base, "max_tokens": 10**9})
            assert status == 400 and "max_tokens 1000000000" in answer["error"]["message"], (path, answer)
        huge = "word " * 2_000_000  # 10 MB
        status, answer = post(address, "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": huge}], "max_tokens": 4})
        assert status == 400 and f"context of {context} tokens" in answer["error"]["message"]
        status, answer = post(address, "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "Say hi. " * 40}], "max_tokens": context - 10})
        assert status == 400 and f"prompt tokens + max_tokens {context - 10} exceed" in answer["error"]["message"]
        status, answer = post(address, "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0})
        assert status == 200 and answer["usage"]["completion_tokens"] <= 3
        # /tokenize has no context limit: rolling loglikelihood tokenizes whole long documents.
        status, answer = post(address, "/tokenize", {"prompt": "word " * (7 * context)})
        assert status == 200 and answer["count"] > context


@pytest.mark.slow
def test_a_long_generation_leaves_the_server_answering_and_stops_when_its_client_leaves(watched):
    with serving(watched.model) as address:
        hog = open_request(address, "/v1/completions",
                           {"prompt": COUNTING, "max_tokens": 1900, "temperature": 0})
        assert watched.started.wait(120)
        with ThreadPoolExecutor(2) as pool:
            quick = [pool.submit(post, address, "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": f"Say {w}."}], "max_tokens": 4,
                                  "temperature": 0}) for w in ("yes", "no")]
            for future in quick:
                status, answer = future.result(timeout=1200)
                assert status == 200, answer
        assert "cancelled" not in watched.ended and watched.ended.count("finished") == 2  # the hog still runs
        hog.close()  # the client leaves: its generation must stop, not run to 1900 tokens
        for _ in range(600):
            if len(watched.ended) == 3:
                break
            time.sleep(0.1)
        assert watched.ended[-1] == "cancelled"


@pytest.mark.slow
def test_the_deadline_stops_a_generation_with_504_and_frees_the_slot(watched):
    with serving(watched.model, parallel=1, request_timeout=3) as address:
        status, answer = post(address, "/v1/completions", {"prompt": COUNTING, "max_tokens": 1900, "temperature": 0})
        assert status == 504 and "--request-timeout" in answer["error"]["message"]
        assert watched.ended == ["cancelled"]
        status, answer = post(address, "/v1/completions", {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
        assert status == 200 and watched.ended == ["cancelled", "finished"]


@pytest.mark.slow
def test_stream_true_answers_server_sent_events_with_the_same_text(hf_smollm2):
    with serving(hf_smollm2) as address:
        body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8, "temperature": 0}
        status, plain = post(address, "/v1/chat/completions", body)
        assert status == 200
        status, raw = post(address, "/v1/chat/completions",
                           {**body, "stream": True, "stream_options": {"include_usage": True}})
        assert status == 200 and raw.endswith("data: [DONE]\n\n")
        events = [json.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        assert text == plain["choices"][0]["message"]["content"]
        assert events[-1]["usage"] == plain["usage"]
        assert all(e["object"] == "chat.completion.chunk" for e in events)
        status, raw = post(address, "/v1/completions", {"prompt": "Hello", "max_tokens": 3, "stream": True,
                                                        "temperature": 0})
        assert status == 200 and raw.endswith("data: [DONE]\n\n") and '"text_completion"' in raw


def test_a_port_out_of_range_is_one_line():
    done = subprocess.run([sys.executable, "-m", "harness", "serve", "--port", "99999"], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: serve --port 99999: a port is a number from 0 to 65535 (0 picks a free one)"]


@pytest.mark.slow
def test_sigterm_during_a_generation_exits_cleanly(tmp_path):
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--port", "0"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()  # "serving ... on http://127.0.0.1:PORT/v1"
        host, port = line.rsplit("http://", 1)[1].strip().removesuffix("/v1").rsplit(":", 1)
        sock = open_request((host, int(port)), "/v1/completions",
                            {"prompt": COUNTING, "max_tokens": 1900, "temperature": 0})
        time.sleep(3)  # generating now
        proc.terminate()
        assert proc.wait(timeout=120) == 0
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "terminate called" not in log.read_text()
