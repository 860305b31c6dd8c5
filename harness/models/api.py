"""The `api:` backend: a model behind an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's
server, `harness serve`, ...).

The spec and its options are described in harness/models/api_spec.py.

Loglikelihood and rolling loglikelihood use /v1/completions with `echo` and `logprobs`: the server
scores the prompt and returns each prompt token's logprob. With a tokenizer, prompts go as token
ids and the context/continuation split is lm-evaluation-harness's (encode the pair whole, cut at
the context's token length), so the figures equal the in-process backends'. Without one, the text
goes as is and a token belongs to the continuation when it ends after the context (`text_offset`).
Each prompt is at most the server's context length minus 2 tokens: echo scores the last target as
part of the prompt, and the server must generate one token besides.

Answers are handed to `on_answer(index, result)` as each arrives, so the executor caches every
answer the server gave even when the server dies in the middle of a chunk.

The fingerprint (the response cache's key) is the base URL, the served model's identity (its
card in /v1/models, which for `harness serve` carries the model's own fingerprint, and the
tokenizer the server publishes), every setting that changes an answer, and this backend's code
and client libraries; transport settings (concurrency, timeouts, retries) do not change answers
and are left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from harness.errors import HarnessError
from harness.models.api_answers import (
    all_greedy, clip_pair, code_version, echo_logprobs, library_versions, load_tokenizer, token_text,
)
from harness.models.api_spec import DEFAULTS, api_key, parse_spec, render_chat_template
from harness.models.base import cut_at_stop, rolling_windows
from harness.models.http import HTTPStatusError, JSONClient, RetryPolicy, ServerUnavailable
from harness.models.tokenized import TokenizedLM, TokenPair, batched
from harness.requests import GenerateRequest, LoglikelihoodResponse, ModelInfo, RollingResponse

log = logging.getLogger(__name__)

CHAT_BY_SERVER = "(applied by the server)"  # chat_template when the server renders it
CHAT_MARK = "\x1eharness-chat:"  # a prompt that is chat messages (JSON) for /v1/chat/completions
DEFAULT_MAX_LENGTH = 2048
PROBE_TEXT = "The capital of France is Paris."
OnAnswer = Callable[[int, Any], None]
# Fields of a /v1/models card that change from one start of the same server to the next.
VOLATILE_CARD_FIELDS = frozenset({"created", "permission", "permissions"})


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
            timeout=opts["timeout"], policy=RetryPolicy(opts["retries"], opts["backoff"], opts["backoff_max"], opts["retry_budget"]),
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
        self._fingerprint = self._compute_fingerprint()

    # -- setup ----------------------------------------------------------------------------------

    def _compute_fingerprint(self) -> str:
        card = {k: v for k, v in self.card.items() if k not in VOLATILE_CARD_FIELDS}
        served_tokenizer = {k: v for k, v in self.tokenizer_info.items() if k != "chat_template"}
        blob = json.dumps({
            "backend": "api", "url": self.base_url, "model": self.model_id, "card": card,
            "served_tokenizer": served_tokenizer, "tokenizer": self.tokenizer_mode, "chat": self.chat_mode,
            "template": hashlib.sha256((self._template or "").encode()).hexdigest(),
            "max_length": self._server_max_length, "prefix": self.options["prefix_token_id"],
            "code": code_version(), "libraries": library_versions(self._local_tokenizer is not None),
        }, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

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
        self._local_tokenizer = load_tokenizer(wanted)
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
            token = token_text(self.tokenizer_info.get(key))
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
        bos = token_text(self.tokenizer_info.get("bos_token"))
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

    def loglikelihood(self, requests: Sequence[tuple[str, str]],
                      on_answer: OnAnswer | None = None) -> list[LoglikelihoodResponse]:
        if any(c.startswith(CHAT_MARK) for c, _ in requests):
            raise HarnessError(f"{self.spec}: chat=server applies the chat template on the server, which "
                               "only generation can use; set `chat_template: never` in this task or chat=none")
        self._check_prompt_logprobs()
        if self.tokenizer_mode == "none":
            return self._loglikelihood_by_offsets(requests, on_answer)
        try:
            self._prefetch([k for c, x in requests for k in self._pair_keys(c, x)])
            pairs = [self.encode_pair(c, x) for c, x in requests]
            return self._score_pairs(pairs, list(range(len(pairs))), on_answer)
        finally:
            self._memo.clear()

    def loglikelihood_rolling(
        self, texts: Sequence[str], *, max_length: int | None = None, stride: int | None = None,
        on_answer: OnAnswer | None = None,
    ) -> list[RollingResponse]:
        if self.tokenizer_mode == "none":
            raise HarnessError(f"{self.spec}: rolling loglikelihood cuts texts into token windows, which "
                               "needs a tokenizer: the server has no /tokenize, so give tokenizer=NAME")
        self._check_prompt_logprobs()
        try:
            self._prefetch([(t, False) for t in texts])
            window = min(max_length or self.max_length, self.max_length)
            owners: list[int] = []
            pairs: list[TokenPair] = []
            counts = [len(self.tok_encode(t)) for t in texts]
            for i, text in enumerate(texts):
                for pair in rolling_windows(self.tok_encode(text), self.prefix_token_id, window, stride):
                    owners.append(i)
                    pairs.append(pair)
            totals = [0.0] * len(texts)
            left = [owners.count(i) for i in range(len(texts))]

            def window_done(owner: int, result: LoglikelihoodResponse) -> None:
                totals[owner] += result[0]
                left[owner] -= 1
                if left[owner] == 0 and on_answer is not None:
                    on_answer(owner, (totals[owner], counts[owner]))

            self._score_pairs(pairs, owners, window_done)
            return [(totals[i], counts[i]) for i in range(len(texts))]
        finally:
            self._memo.clear()

    def _score_pairs(self, pairs: Sequence[TokenPair], owners: Sequence[int],
                     on_answer: OnAnswer | None) -> list[LoglikelihoodResponse]:
        """score_pairs, telling on_answer(owners[i], result) as each pair's answer arrives."""
        if on_answer is None:
            return self.score_pairs(pairs)
        # The clipping of score_pairs, one pair at a time, so that each answer maps to its request.
        clipped = [clip_pair(p, self.max_length + 1) for p in pairs]
        return batched(list(range(len(clipped))), lambda i: len(clipped[i][0]) + len(clipped[i][1]),
                       self.batch_size, lambda idx: self._score_indexed(clipped, idx, owners, on_answer))

    def _score_indexed(self, pairs: Sequence[TokenPair], idx: list[int], owners: Sequence[int],
                       on_answer: OnAnswer) -> list[LoglikelihoodResponse]:
        chosen = [pairs[i] for i in idx]
        return self.score_token_batch(chosen, lambda j, result: on_answer(owners[idx[j]], result))

    def score_token_batch(self, pairs: Sequence[TokenPair],
                          on_answer: OnAnswer | None = None) -> list[LoglikelihoodResponse]:
        payloads = [self._echo_payload(ctx + cont) for ctx, cont in pairs]

        def score(i: int, answer: Any) -> LoglikelihoodResponse:
            ctx, cont = pairs[i]
            logprobs = echo_logprobs(answer, self.spec)
            scored = logprobs["token_logprobs"][len(ctx) : len(ctx) + len(cont)]
            tops = (logprobs.get("top_logprobs") or [])[len(ctx) : len(ctx) + len(cont)]
            if len(scored) != len(cont) or any(lp is None for lp in scored):
                raise HarnessError(f"{self.spec}: the server echoed {len(logprobs['token_logprobs'])} token "
                                   f"logprobs for a prompt of {len(ctx) + len(cont)} tokens")
            return float(sum(scored)), all_greedy(scored, tops)

        tell = None if on_answer is None else (lambda i, answer: on_answer(i, score(i, answer)))
        answers = self.client.post_many(f"{self.base_url}/completions", payloads, tell)
        return [score(i, answer) for i, answer in enumerate(answers)]

    def _loglikelihood_by_offsets(self, requests: Sequence[tuple[str, str]],
                                  on_answer: OnAnswer | None = None) -> list[LoglikelihoodResponse]:
        """Text prompts; continuation tokens are those that end after the context (text_offset)."""
        splits = []
        for context, continuation in requests:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            splits.append((context, context + continuation))

        def score(i: int, answer: Any) -> LoglikelihoodResponse:
            context, prompt = splits[i]
            logprobs = echo_logprobs(answer, self.spec)
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
            return float(sum(scored)), all_greedy(scored, [tops[i] if i < len(tops) else None for i in picked])

        tell = None if on_answer is None else (lambda i, answer: on_answer(i, score(i, answer)))
        answers = self.client.post_many(f"{self.base_url}/completions", [self._echo_payload(p) for _, p in splits],
                                        tell)
        return [score(i, answer) for i, answer in enumerate(answers)]

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
            logprobs = echo_logprobs(answer, self.spec)
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

    def generate(self, requests: Sequence[GenerateRequest], on_answer: OnAnswer | None = None) -> list[str]:
        chat = [r.prompt.startswith(CHAT_MARK) for r in requests]
        out: list[str] = [""] * len(requests)
        for is_chat, path in ((False, "completions"), (True, "chat/completions")):
            idx = [i for i, c in enumerate(chat) if c == is_chat]
            payloads = [self._generate_payload(requests[i], is_chat) for i in idx]

            def text_of(j: int, answer: Any, is_chat: bool = is_chat, idx: list[int] = idx) -> str:
                try:
                    choice = answer["choices"][0]
                    text = choice["message"]["content"] if is_chat else choice["text"]
                except (KeyError, IndexError, TypeError):
                    raise HarnessError(f"{self.spec}: the server's answer has no generated text") from None
                return cut_at_stop(text or "", requests[idx[j]].until)

            def tell(j: int, answer: Any, idx: list[int] = idx, text_of: Callable = text_of) -> None:
                if on_answer is not None:
                    on_answer(idx[j], text_of(j, answer))

            for j, answer in enumerate(self.client.post_many(f"{self.base_url}/{path}", payloads, tell)):
                out[idx[j]] = text_of(j, answer)
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
        special = {k: token_text(v) for k, v in self.tokenizer_info.items() if k.endswith("_token")}
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
                   "concurrency_now": int(self.client.limit), "retries": self.client.retries_made,
                   "rate_limited": self.client.rate_limited, "retry_budget": self.options["retry_budget"],
                   "server_fingerprint": self.card.get("harness_fingerprint")},
        )
