"""`harness serve`: an OpenAI-compatible HTTP server over any of the harness's backends.

Endpoints: GET /v1/models; POST /v1/completions (text or token-id prompts, `echo` and `logprobs`
with per-token `text_offset`); POST /v1/chat/completions (the model's chat template); and vLLM's
tokenizer endpoints POST /tokenize, POST /detokenize, GET /tokenizer_info, which the `api:` backend
and lm-evaluation-harness's `local-completions` use to tokenize exactly as the model does.

Prompt logprobs come from one forward pass over the whole sequence (`TokenizedLM.token_logprobs`),
the same computation as the in-process scoring, so a client gets the in-process figures.

Standard-library `ThreadingHTTPServer`: a thread per connection, no web framework to install.
Model calls run through `Workers` (harness/serve_work.py): several at once where the backend
allows it (`--parallel`), each stopped when its client disconnects or `--request-timeout` passes,
so one client asking for a long generation cannot lock the others out. Requests are checked
against the model's context before they reach it (harness/serve_api.py). `stream: true` answers
with server-sent events. It binds 127.0.0.1 unless told otherwise; with $HARNESS_SERVE_API_KEY set
(or the variable --api-key-env names) every request must carry that key as a Bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.errors import HarnessError
from harness.models.base import LanguageModel
from harness.serve_api import ModelService, RequestError, sse_events
from harness.serve_work import CallStopped, Workers, peer_closed

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024
KEY_ENV = "HARNESS_SERVE_API_KEY"
PARALLEL_BACKENDS = frozenset({"hf"})  # backends whose model calls may run side by side


# -- HTTP --------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: ModelService, api_key: str | None):
        super().__init__(address, Handler)
        self.service = service
        self.api_key = api_key


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server: Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        routes = {"/v1/models": self.server.service.models, "/tokenizer_info": self.server.service.tokenizer_info,
                  "/health": lambda: {"status": "ok"}}
        self._answer(routes, with_body=False)

    def do_POST(self) -> None:  # noqa: N802
        service = self.server.service
        routes = {"/v1/completions": service.completions, "/v1/chat/completions": service.chat_completions,
                  "/tokenize": service.tokenize, "/detokenize": service.detokenize}
        self._answer(routes, with_body=True)

    def _answer(self, routes: dict[str, Any], *, with_body: bool) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        stream = False
        try:
            body = self._body() if with_body else None
            self._authorize()
            handler = routes.get(path)
            if handler is None:
                raise RequestError(404, f"no route {self.command} {path}")
            if with_body and not isinstance(body, dict):
                raise RequestError(400, "the body must be a JSON object")
            if with_body:
                stream = body.get("stream") is True and path.startswith("/v1/")
                status, answer = 200, handler(body, self._client_gone)
            else:
                status, answer = 200, handler()
        except CallStopped as stopped:
            if stopped.reason.startswith("the client"):
                log.info("%s left during %s %s; its generation was stopped", self.address_string(),
                         self.command, path)
                self.close_connection = True
                return
            code = 503 if "shutting down" in stopped.reason else 504
            status, answer, stream = code, _error(code, stopped.reason), False
        except RequestError as err:
            status, answer, stream = err.status, _error(err.status, str(err)), False
        except (HarnessError, ValueError, TypeError, OverflowError) as err:
            status, answer, stream = 400, _error(400, str(err)), False
        except Exception as err:  # noqa: BLE001 - answer 500 and keep serving
            log.exception("error answering %s %s", self.command, path)
            status, answer, stream = 500, _error(500, f"{type(err).__name__}: {err}"), False
        if stream:
            data, kind = sse_events(answer, body), "text/event-stream"
        else:
            data, kind = json.dumps(answer, ensure_ascii=False).encode(), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            if stream:
                self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.info("%s left before the answer to %s %s", self.address_string(), self.command, path)

    def _client_gone(self) -> bool:
        return peer_closed(self.connection)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise RequestError(413, f"the body is over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            raise RequestError(400, "the body is not JSON") from None

    def _authorize(self) -> None:
        key = self.server.api_key
        if key and not hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {key}"):
            raise RequestError(401, "missing or wrong API key (Authorization: Bearer ...)")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.info("%s %s", self.address_string(), format % args)


def _error(status: int, message: str) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def make_server(model: LanguageModel, host: str = "127.0.0.1", port: int = 0, *, name: str | None = None,
                api_key: str | None = None, parallel: int | None = None,
                request_timeout: float | None = None) -> Server:
    """An OpenAI-compatible server for `model`, bound but not yet serving (call serve_forever).
    `parallel`: model calls at once (default 4 where the backend allows it, else 1);
    `request_timeout`: seconds after which a model call is stopped (None: never)."""
    if parallel is None:
        parallel = 4 if model.info.backend in PARALLEL_BACKENDS else 1
    elif model.info.backend not in PARALLEL_BACKENDS:
        parallel = 1
    workers = Workers(parallel, request_timeout)
    return Server((host, port), ModelService(model, name, workers), api_key)
