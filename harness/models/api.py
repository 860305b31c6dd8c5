"""The `api:` backend: a model behind an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's
server, `harness serve`, ...).

Spec: `api:URL[?OPTION=VALUE&...][#MODEL]`

- URL is the server's OpenAI base URL, as OpenAI clients take it: `http://127.0.0.1:8000/v1`.
- MODEL is the model id the server knows; by default the first one its /v1/models lists.
- OPTIONS (also keyword arguments of `load_model`):
  `concurrency=8` requests in flight; `timeout=300` seconds per request; `retries=5` retries of a
  request after a 429, a 5xx, a timeout or a connection error, `backoff=1` seconds before the first
  one, doubling up to `backoff_max=60` (a longer Retry-After from the server wins);
  `tokenizer=auto|server|none|NAME` how prompts become tokens: the server's /tokenize (vLLM's
  protocol, also `harness serve`'s), text only (loglikelihood split by the echoed `text_offset`), or
  a local tokenizer (built-in model name, .gguf file, HF directory or hub id); `auto` is `server`
  when the server has /tokenize, else `none`;
  `chat=auto|server|none`: `auto` renders the chat template that the server publishes at
  /tokenizer_info, `server` sends chat tasks' generations to /v1/chat/completions so the server
  applies its own template, `none` never uses a chat template;
  `max_length=N` the server's context length (default: what the server reports, else 2048);
  `prompt_logprobs=auto|no` (`no`: refuse loglikelihood tasks without asking the server);
  `prefix_token_id=N` the token that conditions a text with no context (default: the server's BOS);
  `api_key_env=NAME` the environment variable holding the API key.

The API key comes from $HARNESS_API_KEY, else $OPENAI_API_KEY (or the variable `api_key_env`
names). It is sent in the Authorization header and written nowhere: not in the spec, the results,
the fingerprint or a log line.

Loglikelihood and rolling loglikelihood use /v1/completions with `echo` and `logprobs`: the server
scores the prompt and returns each prompt token's logprob. With a tokenizer, prompts go as token
ids and the context/continuation split is lm-evaluation-harness's (encode the pair whole, cut at
the context's token length), so the figures equal the in-process backends'. Without one, the text
goes as is and a token belongs to the continuation when it ends after the context (`text_offset`).
Each prompt is at most the server's context length minus 2 tokens: echo scores the last target as
part of the prompt, and the server must generate one token besides.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import hashlib
import json
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from harness.errors import HarnessError
from harness.models.base import cut_at_stop
from harness.models.tokenized import TokenizedLM, TokenPair
from harness.requests import GenerateRequest, LoglikelihoodResponse, ModelInfo, RollingResponse

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULTS: dict[str, Any] = {
    "concurrency": 8, "timeout": 300.0, "retries": 5, "backoff": 1.0, "backoff_max": 60.0,
    "tokenizer": "auto", "chat": "auto", "max_length": None, "prompt_logprobs": "auto",
    "prefix_token_id": None, "api_key_env": None,
}
KEY_ENVS = ("HARNESS_API_KEY", "OPENAI_API_KEY")
RETRY_STATUSES = frozenset({408, 409, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})
CHAT_BY_SERVER = "(applied by the server)"  # chat_template when the server renders it
CHAT_MARK = "\x1eharness-chat:"  # a prompt that is chat messages (JSON) for /v1/chat/completions
DEFAULT_MAX_LENGTH = 2048
PROBE_TEXT = "The capital of France is Paris."


# -- HTTP: concurrency, timeout, retries ---------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `attempt` (0-based); a longer Retry-After wins, up to backoff_max."""
        wait = min(self.backoff_max, self.backoff * 2**attempt)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.backoff_max))
        return wait


class HTTPStatusError(HarnessError):
    """An answer that retrying will not change (a 4xx other than 408, 409, 425 and 429, or 501)."""

    def __init__(self, status: int, url: str, message: str):
        super().__init__(f"the server at {url} answered {status}: {message}")
        self.status = status


class ServerUnavailable(HarnessError):
    """No usable answer after every retry: connection errors, timeouts, 429 or 5xx."""


class JSONClient:
    """JSON over HTTP with at most `concurrency` requests in flight, a timeout per request and
    retries with exponential backoff. Each call runs its own event loop (aiohttp)."""

    def __init__(self, *, headers: dict[str, str], concurrency: int, timeout: float, policy: RetryPolicy):
        self._headers = dict(headers)
        self.concurrency = concurrency
        self.timeout = timeout
        self.policy = policy
        self.retries_made = 0

    def get(self, url: str, *, retry: bool = True) -> Any:
        return _run(self._many([("GET", url, None)], retry))[0]

    def post(self, url: str, payload: dict[str, Any], *, retry: bool = True) -> Any:
        return _run(self._many([("POST", url, payload)], retry))[0]

    def post_many(self, url: str, payloads: Sequence[dict[str, Any]]) -> list[Any]:
        """Answers in the order of `payloads`; a request that fails for good cancels the others."""
        return _run(self._many([("POST", url, p) for p in payloads], True)) if payloads else []

    async def _many(self, calls: list[tuple[str, str, Any]], retry: bool) -> list[Any]:
        import aiohttp

        semaphore = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        ) as session:

            async def one(method: str, url: str, payload: Any) -> Any:
                async with semaphore:
                    return await self._with_retries(session, method, url, payload, retry)

            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(one(*call)) for call in calls]
            except BaseExceptionGroup as errors:
                raise errors.exceptions[0] from None
        return [t.result() for t in tasks]

    async def _with_retries(self, session, method: str, url: str, payload: Any, retry: bool) -> Any:  # noqa: ANN001
        import aiohttp

        attempts = 1 + (self.policy.retries if retry else 0)
        started = time.monotonic()
        last = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                async with session.request(method, url, json=payload) as response:
                    body = await response.text()
                    if response.status < 400:
                        try:
                            return json.loads(body)
                        except ValueError:
                            raise HarnessError(f"the server at {url} answered with something other than JSON") from None
                    message = _error_message(body)
                    if response.status not in RETRY_STATUSES:
                        raise HTTPStatusError(response.status, url, message)
                    last = f"HTTP {response.status}: {message}"
                    retry_after = _seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
                last = f"no answer within {self.timeout:g} s" if isinstance(err, TimeoutError) else (
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": "))
            if attempt + 1 < attempts:
                wait = self.policy.delay(attempt, retry_after)
                self.retries_made += 1
                log.warning("%s %s failed (%s); retry %d of %d in %.1f s", method, url, last, attempt + 1,
                            attempts - 1, wait)
                await asyncio.sleep(wait)
        raise ServerUnavailable(
            f"the server at {url} did not answer after {attempts} attempt(s) in "
            f"{time.monotonic() - started:.0f} s (last: {last}); finished requests are cached, so the "
            "same command resumes where it stopped once the server is back"
        )


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside an event loop
        return pool.submit(asyncio.run, coroutine).result()


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300] or "(empty body)"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return str(error)[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# -- the spec ------------------------------------------------------------------------------------


def parse_spec(name: str, overrides: dict[str, Any]) -> tuple[str, str | None, dict[str, Any], str]:
    """`URL[?opts][#model]` -> (base URL, model id or None, options, the spec as recorded)."""
    parts = urlsplit(name)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HarnessError(f"api model spec {name!r}: give the server's base URL, e.g. "
                           "api:http://127.0.0.1:8000/v1#model-name")
    given: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    given.update({k: v for k, v in overrides.items() if v is not None})
    for key in given:
        if key in ("api_key", "key", "token"):
            raise HarnessError("do not put an API key in the model spec: set $HARNESS_API_KEY (or $OPENAI_API_KEY)")
        if key not in DEFAULTS:
            near = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise HarnessError(f"api model spec: unknown option {key!r}{hint}; options: {', '.join(DEFAULTS)}")
    options = {**DEFAULTS, **given}
    try:
        for key in ("concurrency", "retries", "max_length", "prefix_token_id"):
            if options[key] is not None:
                options[key] = int(options[key])
        for key in ("timeout", "backoff", "backoff_max"):
            options[key] = float(options[key])
    except ValueError as err:
        raise HarnessError(f"api model spec: {err}; numeric options take numbers") from None
    if options["concurrency"] < 1 or options["retries"] < 0 or options["timeout"] <= 0:
        raise HarnessError("api model spec: concurrency must be >= 1, retries >= 0 and timeout > 0")
    for key, allowed in (("chat", ("auto", "server", "none")), ("prompt_logprobs", ("auto", "no"))):
        if options[key] not in allowed:
            raise HarnessError(f"api model spec: {key}={options[key]} is not one of {', '.join(allowed)}")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")  # never the user:password
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    shown = base + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return base, parts.fragment or None, options, shown


def api_key(env_name: str | None) -> str | None:
    for name in (env_name,) if env_name else KEY_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


# -- the backend ---------------------------------------------------------------------------------


class APILanguageModel(TokenizedLM):
    """A model served over the OpenAI API. See the module docstring for the spec."""

    backend = "api"
    accepted_options = frozenset(DEFAULTS)
    count_tokens = None  # throughput comes from the server's own metrics, not a tokenizer round trip

    def __init__(self, name: str, **options: Any):
        self.base_url, wanted, self.options, shown = parse_spec(name, options)
        self.spec = f"api:{shown}"
        opts = self.options
        key = api_key(opts["api_key_env"])
        self.client = JSONClient(
            headers={"Authorization": f"Bearer {key}"} if key else {}, concurrency=opts["concurrency"],
            timeout=opts["timeout"], policy=RetryPolicy(opts["retries"], opts["backoff"], opts["backoff_max"]),
        )
        self.root = self.base_url.removesuffix("/v1")
        cards = self._get(f"{self.base_url}/models", "list the served models").get("data") or []
        ids = [c.get("id") for c in cards]
        if wanted is not None and wanted not in ids and ids:
            raise HarnessError(f"{self.spec}: the server serves {', '.join(map(str, ids))}, not {wanted!r}")
        self.model_id = wanted or (ids[0] if ids else None)
        if not self.model_id:
            raise HarnessError(f"{self.spec}: the server lists no model; name one after '#'")
        self.card = next((c for c in cards if c.get("id") == self.model_id), {})
        self.tokenizer_info = self._optional_get(f"{self.root}/tokenizer_info") or {}
        self._memo: dict[tuple[str, bool], list[int]] = {}
        self._local_tokenizer = None
        self.tokenizer_mode = self._choose_tokenizer(opts["tokenizer"])
        self._server_max_length = opts["max_length"] or self._reported_max_length()
        self.batch_size = 4 * opts["concurrency"]  # pairs per wave of concurrent requests
        self.chat_mode, self._template = self._choose_chat(opts["chat"])
        self._logprobs_checked = False
        self._prefix_token_id: int | None = None
        blob = json.dumps({
            "backend": "api", "model": self.model_id, "server": self.card.get("harness_fingerprint"),
            "tokenizer": self.tokenizer_mode, "chat": self.chat_mode,
            "template": hashlib.sha256((self._template or "").encode()).hexdigest(),
            "max_length": self._server_max_length, "prefix": opts["prefix_token_id"],
        }, sort_keys=True)
        self._fingerprint = hashlib.sha256(blob.encode()).hexdigest()

    # -- setup ----------------------------------------------------------------------------------

    def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            answer = self.client.get(url)
        except HarnessError as err:
            raise HarnessError(f"{self.spec}: could not {what}: {err}") from None
        return answer if isinstance(answer, dict) else {}

    def _optional_get(self, url: str) -> dict[str, Any] | None:
        """An endpoint not every server has: None when it is missing (404), retried when the server is down."""
        try:
            answer = self.client.get(url)
        except ServerUnavailable:
            raise
        except HarnessError:
            return None
        return answer if isinstance(answer, dict) else None

    def _choose_tokenizer(self, wanted: str) -> str:
        if wanted in ("auto", "server"):
            try:
                self._remote_tokenize([("Hello", False)])
                return "server"
            except ServerUnavailable:
                raise
            except HarnessError as err:  # no /tokenize (404), or one that answers something else
                if wanted == "server":
                    raise HarnessError(f"{self.spec}: tokenizer=server, but {err}") from None
                return "none"
        if wanted == "none":
            return "none"
        self._local_tokenizer = _load_tokenizer(wanted)
        return f"local:{wanted}"

    def _reported_max_length(self) -> int:
        for value in (self.card.get("max_model_len"), self.tokenizer_info.get("max_model_len"),
                      self.tokenizer_info.get("model_max_length")):
            if isinstance(value, int) and 1 < value < 10**7:
                return value
        log.warning("%s: the server reports no context length; assuming %d tokens (set max_length=N)",
                    self.spec, DEFAULT_MAX_LENGTH)
        return DEFAULT_MAX_LENGTH

    def _choose_chat(self, wanted: str) -> tuple[str, str | None]:
        if wanted == "none":
            return "none", None
        if wanted == "server":
            return "server", None
        template = self.tokenizer_info.get("chat_template")
        return ("template", template) if isinstance(template, str) and template else ("none", None)

    # -- tokens ---------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self._server_max_length - 2

    @property
    def prefix_token_id(self) -> int:
        if self._prefix_token_id is None:
            self._prefix_token_id = self._find_prefix_token_id()
        return self._prefix_token_id

    def _find_prefix_token_id(self) -> int:
        if self.options["prefix_token_id"] is not None:
            return self.options["prefix_token_id"]
        if self._local_tokenizer is not None:
            tok = self._local_tokenizer
            return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        for key in ("prefix_token_id", "bos_token_id", "eos_token_id"):
            if isinstance(self.tokenizer_info.get(key), int):
                return self.tokenizer_info[key]
        for key in ("bos_token", "eos_token"):
            token = _token_text(self.tokenizer_info.get(key))
            if token:
                ids = self.tok_encode(token)
                if len(ids) == 1:
                    return ids[0]
        ids = self.tok_encode("", add_special_tokens=True)
        if len(ids) == 1:
            return ids[0]
        raise HarnessError(f"{self.spec}: cannot tell which token conditions a text with no context "
                           "(the server publishes no BOS); set prefix_token_id=N in the spec")

    def tok_encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        key = (text, add_special_tokens)
        if key not in self._memo:
            self._prefetch([key])
        return self._memo[key]

    def _starts_with_special(self, text: str) -> bool:
        bos = _token_text(self.tokenizer_info.get("bos_token"))
        if self._local_tokenizer is not None:
            bos = self._local_tokenizer.bos_token
        return bool(bos) and text.startswith(bos)

    def _prefetch(self, keys: Sequence[tuple[str, bool]]) -> None:
        todo = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if not todo:
            return
        if self.tokenizer_mode == "none":
            raise HarnessError(f"{self.spec}: this needs the server's tokenizer, and the server has no "
                               "/tokenize; give a local one with tokenizer=NAME in the spec")
        if self._local_tokenizer is not None:
            for text, special in todo:
                self._memo[(text, special)] = self._local_tokenizer(text, add_special_tokens=special).input_ids
            return
        for key, ids in zip(todo, self._remote_tokenize(todo)):
            self._memo[key] = ids

    def _remote_tokenize(self, keys: Sequence[tuple[str, bool]]) -> list[list[int]]:
        payloads = [{"model": getattr(self, "model_id", None), "prompt": text, "add_special_tokens": special}
                    for text, special in keys]
        answers = self.client.post_many(f"{self.root}/tokenize", payloads)
        out = []
        for answer in answers:
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise HarnessError("its /tokenize does not answer with token ids")
            out.append(tokens)
        return out

    def _pair_keys(self, context: str, continuation: str) -> list[tuple[str, bool]]:
        """The texts `encode_pair` will tokenize, so that they can be fetched concurrently."""
        if not context:
            return [(continuation, False)]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        special = not self._starts_with_special(context)
        return [(context, special), (context + continuation, special)]

    # -- the contract ---------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LoglikelihoodResponse]:
        if any(c.startswith(CHAT_MARK) for c, _ in requests):
            raise HarnessError(f"{self.spec}: chat=server applies the chat template on the server, which "
                               "only generation can use; set `chat_template: never` in this task or chat=none")
        self._check_prompt_logprobs()
        if self.tokenizer_mode == "none":
            return self._loglikelihood_by_offsets(requests)
        try:
            self._prefetch([k for c, x in requests for k in self._pair_keys(c, x)])
            return super().loglikelihood(requests)
        finally:
            self._memo.clear()

    def loglikelihood_rolling(
        self, texts: Sequence[str], *, max_length: int | None = None, stride: int | None = None
    ) -> list[RollingResponse]:
        if self.tokenizer_mode == "none":
            raise HarnessError(f"{self.spec}: rolling loglikelihood cuts texts into token windows, which "
                               "needs a tokenizer: the server has no /tokenize, so give tokenizer=NAME")
        self._check_prompt_logprobs()
        try:
            self._prefetch([(t, False) for t in texts])
            return super().loglikelihood_rolling(texts, max_length=max_length, stride=stride)
        finally:
            self._memo.clear()

    def score_token_batch(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        payloads = [self._echo_payload(ctx + cont) for ctx, cont in pairs]
        results = []
        for (ctx, cont), answer in zip(pairs, self.client.post_many(f"{self.base_url}/completions", payloads)):
            logprobs = _echo_logprobs(answer, self.spec)
            scored = logprobs["token_logprobs"][len(ctx) : len(ctx) + len(cont)]
            tops = (logprobs.get("top_logprobs") or [])[len(ctx) : len(ctx) + len(cont)]
            if len(scored) != len(cont) or any(lp is None for lp in scored):
                raise HarnessError(f"{self.spec}: the server echoed {len(logprobs['token_logprobs'])} token "
                                   f"logprobs for a prompt of {len(ctx) + len(cont)} tokens")
            results.append((float(sum(scored)), _all_greedy(scored, tops)))
        return results

    def _loglikelihood_by_offsets(self, requests: Sequence[tuple[str, str]]) -> list[LoglikelihoodResponse]:
        """Text prompts; continuation tokens are those that end after the context (text_offset)."""
        splits = []
        for context, continuation in requests:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            splits.append((context, context + continuation))
        answers = self.client.post_many(f"{self.base_url}/completions", [self._echo_payload(p) for _, p in splits])
        results = []
        for (context, prompt), answer in zip(splits, answers):
            logprobs = _echo_logprobs(answer, self.spec)
            text = (answer["choices"][0].get("text") or "")
            offsets = logprobs.get("text_offset")
            if not isinstance(offsets, list) or not text.startswith(prompt):
                raise HarnessError(f"{self.spec}: the server's echo does not give the prompt back with text "
                                   "offsets; use a server with /tokenize or give tokenizer=NAME")
            n_prompt = sum(1 for o in offsets if o < len(prompt))
            ends = [*offsets[1:n_prompt], len(prompt)]
            picked = [i for i in range(n_prompt) if ends[i] > len(context)]
            scored = [logprobs["token_logprobs"][i] for i in picked]
            if not picked or any(lp is None for lp in scored):
                raise HarnessError(f"{self.spec}: the server gave no logprob for the first token of a text with "
                                   "no context; give tokenizer=NAME so the harness can add the prefix token")
            tops = logprobs.get("top_logprobs") or []
            results.append((float(sum(scored)), _all_greedy(scored, [tops[i] if i < len(tops) else None for i in picked])))
        return results

    def _echo_payload(self, prompt: str | list[int]) -> dict[str, Any]:
        return {"model": self.model_id, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 1,
                "temperature": 0.0}

    def _check_prompt_logprobs(self) -> None:
        """Once: refuse, with the reason, when the server does not echo prompt logprobs."""
        if self._logprobs_checked:
            return
        refusal = (f"{self.spec}: the server cannot return prompt logprobs (/v1/completions with echo and "
                   "logprobs){why}, which loglikelihood and perplexity tasks need; generation tasks still run. "
                   "Serve the model with vLLM, SGLang or `harness serve` for these tasks")
        if self.options["prompt_logprobs"] == "no":
            raise HarnessError(refusal.format(why=" (prompt_logprobs=no in the spec)"))
        prompt: str | list[int] = PROBE_TEXT if self.tokenizer_mode == "none" else self.tok_encode(PROBE_TEXT, True)
        try:
            answer = self.client.post(f"{self.base_url}/completions", self._echo_payload(prompt))
            logprobs = _echo_logprobs(answer, self.spec)
        except HTTPStatusError as err:
            raise HarnessError(refusal.format(why=f": {err}")) from None
        except ServerUnavailable:
            raise
        except HarnessError:
            raise HarnessError(refusal.format(why=" (the answer carries no logprobs)")) from None
        values = logprobs.get("token_logprobs") or []
        if len(values) < 2 or any(v is None for v in values[1:]) or (
                self.tokenizer_mode == "none" and not logprobs.get("text_offset")):
            raise HarnessError(refusal.format(why=" (the echo carries no per-token logprobs)"))
        self._logprobs_checked = True

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        chat = [r.prompt.startswith(CHAT_MARK) for r in requests]
        out: list[str] = [""] * len(requests)
        for is_chat, path in ((False, "completions"), (True, "chat/completions")):
            idx = [i for i, c in enumerate(chat) if c == is_chat]
            payloads = [self._generate_payload(requests[i], is_chat) for i in idx]
            for i, answer in zip(idx, self.client.post_many(f"{self.base_url}/{path}", payloads)):
                try:
                    choice = answer["choices"][0]
                    text = choice["message"]["content"] if is_chat else choice["text"]
                except (KeyError, IndexError, TypeError):
                    raise HarnessError(f"{self.spec}: the server's answer has no generated text") from None
                out[i] = cut_at_stop(text or "", requests[i].until)
        return out

    def _generate_payload(self, req: GenerateRequest, is_chat: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model_id, "max_tokens": req.max_gen_toks, "seed": req.seed,
                                   "temperature": 0.0 if req.greedy else req.temperature}
        if is_chat:
            payload["messages"] = json.loads(req.prompt[len(CHAT_MARK) :])
        else:
            payload["prompt"] = req.prompt
        if req.until:
            payload["stop"] = list(req.until)
        if not req.greedy:
            payload["top_p"] = req.top_p
            if req.top_k:
                payload["top_k"] = req.top_k
        if req.repetition_penalty != 1.0:
            payload["repetition_penalty"] = req.repetition_penalty
        return payload

    # -- chat -----------------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        return CHAT_BY_SERVER if self.chat_mode == "server" else self._template

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        if self.chat_mode == "server":
            return CHAT_MARK + json.dumps(list(messages), ensure_ascii=False)
        if self._template is None:
            return super().apply_chat_template(messages)
        special = {k: _token_text(v) for k, v in self.tokenizer_info.items() if k.endswith("_token")}
        return render_chat_template(self._template, messages, special)

    # -- identity -------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=str(self.model_id), backend=self.backend, spec=self.spec, n_params=self.card.get("n_params"),
            dtype=self.card.get("dtype"), device="remote", max_length=self._server_max_length,
            source=self.base_url,
            extra={"tokenizer": self.tokenizer_mode, "chat": self.chat_mode, "concurrency": self.client.concurrency,
                   "server_fingerprint": self.card.get("harness_fingerprint")},
        )


def _echo_logprobs(answer: Any, spec: str) -> dict[str, Any]:
    try:
        logprobs = answer["choices"][0]["logprobs"]
        if isinstance(logprobs.get("token_logprobs"), list):
            return logprobs
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    raise HarnessError(f"{spec}: the server's answer carries no prompt logprobs")


def _all_greedy(scored: Sequence[float], tops: Sequence[Any]) -> bool:
    """Every scored token is the most likely one at its position (ties count as greedy)."""
    for logprob, top in zip(scored, tops):
        if not isinstance(top, dict) or not top or logprob < max(top.values()):
            return False
    return len(tops) == len(scored)


def _token_text(value: Any) -> str | None:
    """A special token as text: tokenizer configs write it as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _load_tokenizer(name: str):  # noqa: ANN202 - a transformers tokenizer
    from transformers import AutoTokenizer

    from harness.models.source import resolve_source

    source = resolve_source(name)
    try:
        if source.kind == "gguf":
            return AutoTokenizer.from_pretrained(str(source.path.parent), gguf_file=source.path.name)
        return AutoTokenizer.from_pretrained(source.location)
    except OSError as err:
        raise HarnessError(f"tokenizer {name!r} could not be loaded: {str(err).splitlines()[0]}") from None


def render_chat_template(template: str, messages: Sequence[dict[str, str]], special: dict[str, Any]) -> str:
    """Render a Hugging Face chat template as transformers does (sandboxed Jinja2)."""
    import datetime as dt

    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: dt.datetime.now().strftime(fmt))
    try:
        return env.from_string(template).render(
            messages=list(messages), add_generation_prompt=True, **{k: v for k, v in special.items() if v})
    except TemplateError as err:
        raise HarnessError(f"the server's chat template failed: {err}") from None
