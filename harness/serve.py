"""`harness serve`: an OpenAI-compatible HTTP server over any of the harness's backends.

Endpoints: GET /v1/models; POST /v1/completions (text or token-id prompts, `echo` and `logprobs`
with per-token `text_offset`); POST /v1/chat/completions (the model's chat template); and vLLM's
tokenizer endpoints POST /tokenize, POST /detokenize, GET /tokenizer_info, which the `api:` backend
and lm-evaluation-harness's `local-completions` use to tokenize exactly as the model does.

Prompt logprobs come from one forward pass over the whole sequence (`TokenizedLM.token_logprobs`),
the same computation as the in-process scoring, so a client gets the in-process figures.

Standard-library `ThreadingHTTPServer`: no web framework to install, and the model answers one
request at a time behind a lock anyway (an evaluation server's throughput is the model's, not the
HTTP layer's). It binds 127.0.0.1 unless told otherwise; with $HARNESS_SERVE_API_KEY set (or the
variable --api-key-env names) every request must carry that key as a Bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.errors import HarnessError
from harness.models.base import LanguageModel
from harness.models.tokenized import TokenizedLM
from harness.requests import GenerateRequest

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024
KEY_ENV = "HARNESS_SERVE_API_KEY"


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ModelService:
    """The OpenAI API over one LanguageModel; every model call holds one lock."""

    def __init__(self, model: LanguageModel, name: str | None = None):
        self.model = model
        self.name = name or model.info.name
        self.created = int(time.time())
        self.lock = threading.Lock()

    # -- metadata and tokenizer -------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        info = self.model.info
        card = {"id": self.name, "object": "model", "created": self.created, "owned_by": "harness",
                "max_model_len": info.max_length, "harness_spec": info.spec,
                "harness_fingerprint": self.model.fingerprint, "n_params": info.n_params, "dtype": info.dtype}
        return {"object": "list", "data": [card]}

    def _tokenized(self) -> TokenizedLM:
        if not isinstance(self.model, TokenizedLM) or getattr(self.model, "tokenizer", None) is None:
            raise RequestError(400, f"the {self.model.info.backend} backend does not score tokens in process")
        return self.model

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._tokenized()
        text = body.get("prompt", body.get("text"))
        if not isinstance(text, str):
            raise RequestError(400, "`prompt` must be a string")
        with self.lock:
            tokens = model.tok_encode(text, add_special_tokens=bool(body.get("add_special_tokens", True)))
        return {"tokens": tokens, "count": len(tokens), "max_model_len": model.max_length}

    def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        tokens = _token_list(body.get("tokens"), "tokens")
        with self.lock:
            return {"prompt": _decode(self._tokenized(), tokens)}

    def tokenizer_info(self) -> dict[str, Any]:
        model = self._tokenized()
        tok = model.tokenizer
        return {
            "tokenizer_class": type(tok).__name__, "bos_token": tok.bos_token, "eos_token": tok.eos_token,
            "pad_token": tok.pad_token, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "prefix_token_id": model.prefix_token_id, "chat_template": model.chat_template,
            "model_max_length": model.max_length, "max_model_len": model.max_length,
        }

    # -- completions ----------------------------------------------------------------------------

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_common(body)
        prompts = _prompts(body.get("prompt"))
        max_tokens = _int(body.get("max_tokens", 16), "max_tokens", 0)
        top = body.get("logprobs")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
            raise RequestError(400, "`logprobs` must be an integer from 0 to 20")
        echo = bool(body.get("echo", False))
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
        for index, prompt in enumerate(prompts):
            choice, n_prompt, n_generated = self._complete(prompt, body, max_tokens, top, echo)
            choices.append({"index": index, **choice})
            usage["prompt_tokens"] += n_prompt
            usage["completion_tokens"] += n_generated
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name, "choices": choices, "usage": usage}

    def _complete(self, prompt: str | list[int], body: dict[str, Any], max_tokens: int, top: int | None,
                  echo: bool) -> tuple[dict[str, Any], int, int]:
        scoring = top is not None or echo
        model = self._tokenized() if scoring or not isinstance(prompt, str) else self.model
        with self.lock:
            if isinstance(prompt, str):
                text = prompt
                ids, n_added = _encode_prompt(model, prompt) if isinstance(model, TokenizedLM) else ([], 0)
            else:
                ids, n_added = prompt, 0
                text = _decode(model, ids)
            greedy = float(body.get("temperature", 1.0)) <= 0.0
            if isinstance(model, TokenizedLM) and len(ids) + max_tokens > model.max_length:
                raise RequestError(400, f"{len(ids)} prompt tokens + max_tokens {max_tokens} exceed the "
                                        f"model's context of {model.max_length} tokens")
            scores = None
            if max_tokens == 0:
                gen_ids, gen_text, finish = [], "", "length"
            elif scoring and greedy and max_tokens == 1:
                scores = model.token_logprobs(ids, top=max(1, top or 1))  # the greedy token is the best next one
                best = scores[-1][1]
                gen_ids = [best[0][0]]
                scores[-1] = (best[0][1], best)
                gen_text, finish = _decode(model, gen_ids, skip_special=True), "length"
            else:
                request = _generate_request(text, body, max_tokens)
                gen_text = self.model.generate([request])[0]
                gen_ids = model.tok_encode(gen_text) if isinstance(model, TokenizedLM) else []
                finish = "length" if len(gen_ids) >= max_tokens else "stop"
            choice: dict[str, Any] = {"text": gen_text, "logprobs": None, "finish_reason": finish}
            if scoring:
                pieces = token_pieces(model, ids + gen_ids, n_added)
                if echo:
                    choice["text"] = "".join(pieces[: len(ids)]) + gen_text
                if top is not None:
                    if scores is None or len(scores) < len(ids) + len(gen_ids):
                        scores = model.token_logprobs(ids + gen_ids, top=max(1, top))
                    first = 0 if echo else len(ids)
                    choice["logprobs"] = _logprobs_record(model, pieces, scores, first, top)
        return choice, len(ids), len(gen_ids)

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_common(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise RequestError(400, "`messages` must be a list of {role, content} objects")
        max_tokens = _int(body.get("max_completion_tokens", body.get("max_tokens", 256)), "max_tokens", 1)
        with self.lock:
            prompt = self.model.apply_chat_template(messages)
            text = self.model.generate([_generate_request(prompt, body, max_tokens)])[0]
            n_prompt = self.model.count_tokens([prompt]) if isinstance(self.model, TokenizedLM) else 0
            n_out = self.model.count_tokens([text]) if isinstance(self.model, TokenizedLM) else 0
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if n_out >= max_tokens else "stop"}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        }

    def _check_common(self, body: dict[str, Any]) -> None:
        if body.get("model") not in (None, self.name):
            raise RequestError(404, f"model {body['model']!r} is not served here; this server serves {self.name!r}")
        if body.get("stream"):
            raise RequestError(400, "streaming is not supported; send stream=false")
        if int(body.get("n", 1) or 1) != 1 or int(body.get("best_of", 1) or 1) != 1:
            raise RequestError(400, "only n=1 and best_of=1 are supported")


# -- helpers ---------------------------------------------------------------------------------------


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(400, f"`{name}` must be an integer of at least {minimum}")
    return value


def _token_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise RequestError(400, f"`{name}` must be a list of token ids")
    return value


def _prompts(value: Any) -> list[str | list[int]]:
    """OpenAI's prompt forms: a string, a list of strings, token ids, or a list of token-id lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return list(value)
        if all(isinstance(t, int) for t in value):
            return [_token_list(value, "prompt")]
        if all(isinstance(p, list) and p for p in value):
            return [_token_list(p, "prompt") for p in value]
    raise RequestError(400, "`prompt` must be a string, a list of strings, or (lists of) token ids")


def _encode_prompt(model: TokenizedLM, text: str) -> tuple[list[int], int]:
    """Token ids of a text prompt as the model encodes a context, and how many special tokens the
    tokenizer put in front (they stand for no text of the prompt)."""
    ids = model.encode_context(text)
    plain = model.tok_encode(text)
    n_added = len(ids) - len(plain) if len(ids) > len(plain) and ids[len(ids) - len(plain) :] == plain else 0
    return ids, n_added


def _decode(model: TokenizedLM, ids: Sequence[int], skip_special: bool = False) -> str:
    return model.tokenizer.decode(list(ids), skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)


def token_pieces(model: TokenizedLM, ids: Sequence[int], n_added: int = 0) -> list[str]:
    """The text of each token, so that the pieces join into the decoded sequence: decoded with a
    few tokens before it (spacing depends on them), a character split over several byte tokens
    going to the token that completes it. The first `n_added` tokens are zero-width."""
    pieces = [""] * n_added
    done = n_added  # tokens before this one have their text
    for i in range(n_added, len(ids)):
        lo = max(n_added, done - 6)
        before = _decode(model, ids[lo:done])
        after = _decode(model, ids[lo : i + 1])
        if after.endswith("\ufffd") and i + 1 < len(ids):
            pieces.append("")  # an incomplete character: wait for the rest of its bytes
            continue
        pieces.append(after[len(before) :] if after.startswith(before) else _decode(model, ids[done : i + 1]))
        done = i + 1
    return pieces


def _logprobs_record(model: TokenizedLM, pieces: list[str], scores: list, first: int, top: int) -> dict[str, Any]:
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    record: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for i in range(first, len(pieces)):
        logprob, best = scores[i]
        record["tokens"].append(pieces[i])
        record["token_logprobs"].append(logprob)
        record["text_offset"].append(offsets[i])
        if logprob is None:
            record["top_logprobs"].append(None)
            continue
        alternatives: dict[str, float] = {}
        for token_id, lp in best[: max(1, top)]:
            alternatives.setdefault(_decode(model, [token_id]), lp)
        alternatives.setdefault(pieces[i], logprob)  # OpenAI's top_logprobs include the chosen token
        record["top_logprobs"].append(alternatives)
    return record


def _generate_request(prompt: str, body: dict[str, Any], max_tokens: int) -> GenerateRequest:
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(s for s in stop if isinstance(s, str))
    temperature = float(body.get("temperature", 1.0))
    seed = body.get("seed")
    return GenerateRequest(
        prompt=prompt, until=stop, max_gen_toks=max_tokens, temperature=max(temperature, 0.0),
        do_sample=temperature > 0, top_p=float(body.get("top_p", 1.0)), top_k=int(body.get("top_k", 0) or 0),
        repetition_penalty=float(body.get("repetition_penalty", 1.0)), seed=int(seed) if seed is not None else 1234,
    )


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
        try:
            body = self._body() if with_body else None
            self._authorize()
            handler = routes.get(path)
            if handler is None:
                raise RequestError(404, f"no route {self.command} {path}")
            if with_body and not isinstance(body, dict):
                raise RequestError(400, "the body must be a JSON object")
            status, answer = 200, handler(body) if with_body else handler()
        except RequestError as err:
            status, answer = err.status, _error(err.status, str(err))
        except (HarnessError, ValueError, TypeError) as err:
            status, answer = 400, _error(400, str(err))
        except Exception as err:  # noqa: BLE001 - answer 500 and keep serving
            log.exception("error answering %s %s", self.command, path)
            status, answer = 500, _error(500, f"{type(err).__name__}: {err}")
        data = json.dumps(answer, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.info("%s left before the answer to %s %s", self.address_string(), self.command, path)

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
                api_key: str | None = None) -> Server:
    """An OpenAI-compatible server for `model`, bound but not yet serving (call serve_forever)."""
    return Server((host, port), ModelService(model, name), api_key)
