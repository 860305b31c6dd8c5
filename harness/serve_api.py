"""The OpenAI API of `harness serve` over one LanguageModel: request checking, completions, chat,
tokenizer endpoints and server-sent events. The HTTP layer is in harness/serve.py.

Every request is checked before the model sees it: `max_tokens` and the prompt together must fit
the model's context (400, naming the limit, on both completion endpoints), and a prompt far longer
than any context is refused before it is tokenized. Model calls go through `Workers`
(harness/serve_work.py), which stops them when the client leaves or the deadline passes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from harness.models.base import LanguageModel
from harness.models.tokenized import TokenizedLM
from harness.requests import GenerateRequest
from harness.serve_work import Workers

# No tokenizer puts more than this many characters in one token on average, so a longer prompt
# cannot fit the context, and is refused without spending time tokenizing it.
MAX_CHARS_PER_TOKEN = 32
Gone = Callable[[], bool]


def _never() -> bool:
    return False


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ModelService:
    """The OpenAI API over one LanguageModel; model calls run through `workers`."""

    def __init__(self, model: LanguageModel, name: str | None = None, workers: Workers | None = None):
        self.model = model
        self.name = name or model.info.name
        self.created = int(time.time())
        self.workers = workers or Workers()

    @property
    def max_length(self) -> int | None:
        if isinstance(self.model, TokenizedLM):
            return self.model.max_length
        return self.model.info.max_length

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

    def tokenize(self, body: dict[str, Any], gone: Gone = _never) -> dict[str, Any]:
        model = self._tokenized()
        text = body.get("prompt", body.get("text"))
        if not isinstance(text, str):
            raise RequestError(400, "`prompt` must be a string")
        # No context check here: rolling loglikelihood tokenizes whole documents longer than the context.
        special = bool(body.get("add_special_tokens", True))
        tokens = self.workers.call(lambda: model.tok_encode(text, add_special_tokens=special), client_gone=gone)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": model.max_length}

    def detokenize(self, body: dict[str, Any], gone: Gone = _never) -> dict[str, Any]:
        tokens = _token_list(body.get("tokens"), "tokens")
        model = self._tokenized()
        return {"prompt": self.workers.call(lambda: _decode(model, tokens), client_gone=gone)}

    def tokenizer_info(self) -> dict[str, Any]:
        model = self._tokenized()
        tok = model.tokenizer
        return {
            "tokenizer_class": type(tok).__name__, "bos_token": tok.bos_token, "eos_token": tok.eos_token,
            "pad_token": tok.pad_token, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "prefix_token_id": model.prefix_token_id, "chat_template": model.chat_template,
            "model_max_length": model.max_length, "max_model_len": model.max_length,
        }

    # -- checks ---------------------------------------------------------------------------------

    def _max_tokens(self, value: Any, minimum: int) -> int:
        max_tokens = _int(value, "max_tokens", minimum)
        if self.max_length and max_tokens > self.max_length:
            raise RequestError(400, f"max_tokens {max_tokens} exceeds the model's context of "
                                    f"{self.max_length} tokens")
        return max_tokens

    def _check_chars(self, n_chars: int) -> None:
        if self.max_length and n_chars > MAX_CHARS_PER_TOKEN * self.max_length:
            raise RequestError(400, f"the prompt is {n_chars} characters, more than the model's context of "
                                    f"{self.max_length} tokens can hold")

    def _check_fits(self, n_prompt: int, max_tokens: int) -> None:
        if self.max_length and n_prompt + max_tokens > self.max_length:
            raise RequestError(400, f"{n_prompt} prompt tokens + max_tokens {max_tokens} exceed the "
                                    f"model's context of {self.max_length} tokens")

    # -- completions ----------------------------------------------------------------------------

    def completions(self, body: dict[str, Any], gone: Gone = _never) -> dict[str, Any]:
        self._check_common(body)
        prompts = _prompts(body.get("prompt"))
        max_tokens = self._max_tokens(body.get("max_tokens", 16), 0)
        top = body.get("logprobs")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
            raise RequestError(400, "`logprobs` must be an integer from 0 to 20")
        for prompt in prompts:
            self._check_chars(len(prompt) if isinstance(prompt, str) else 0)
            if not isinstance(prompt, str):
                self._check_fits(len(prompt), max_tokens)
        echo = bool(body.get("echo", False))
        sampled = float(body.get("temperature", 1.0)) > 0.0
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
        for index, prompt in enumerate(prompts):
            choice, n_prompt, n_generated = self.workers.call(
                lambda p=prompt: self._complete(p, body, max_tokens, top, echo), client_gone=gone, sampled=sampled)
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
        if isinstance(prompt, str):
            text = prompt
            ids, n_added = _encode_prompt(model, prompt) if isinstance(model, TokenizedLM) else ([], 0)
        else:
            ids, n_added = prompt, 0
            text = _decode(model, ids)
        greedy = float(body.get("temperature", 1.0)) <= 0.0
        if isinstance(model, TokenizedLM):
            self._check_fits(len(ids), max_tokens)
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

    def chat_completions(self, body: dict[str, Any], gone: Gone = _never) -> dict[str, Any]:
        self._check_common(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and isinstance(m.get("content", ""), str) for m in messages):
            raise RequestError(400, "`messages` must be a non-empty list of {role, content} objects with text content")
        max_tokens = self._max_tokens(body.get("max_completion_tokens", body.get("max_tokens", 256)), 1)
        self._check_chars(sum(len(m.get("content", "")) for m in messages))
        model = self.model

        def answer() -> tuple[str, int, int]:
            prompt = model.apply_chat_template(messages)
            n_prompt = len(model.encode_context(prompt)) if isinstance(model, TokenizedLM) else 0
            self._check_fits(n_prompt, max_tokens)
            text = model.generate([_generate_request(prompt, body, max_tokens)])[0]
            n_out = len(model.tok_encode(text)) if isinstance(model, TokenizedLM) else 0
            return text, n_prompt, n_out

        sampled = float(body.get("temperature", 1.0)) > 0.0
        text, n_prompt, n_out = self.workers.call(answer, client_gone=gone, sampled=sampled)
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
        if not isinstance(body.get("stream", False), bool):
            raise RequestError(400, "`stream` must be true or false")
        if int(body.get("n", 1) or 1) != 1 or int(body.get("best_of", 1) or 1) != 1:
            raise RequestError(400, "only n=1 and best_of=1 are supported")


def sse_events(answer: dict[str, Any], body: dict[str, Any]) -> bytes:
    """A finished answer as server-sent events in OpenAI's streaming format: the text in one
    chunk (generation is not split into tokens on the way), then the finish reason, the usage when
    `stream_options.include_usage` asks for it, and `data: [DONE]`."""
    chat = answer["object"] == "chat.completion"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": answer["id"], "object": kind, "created": answer["created"], "model": answer["model"]}
    events = []
    for choice in answer["choices"]:
        if chat:
            text = choice["message"]["content"]
            events.append({**head, "choices": [{"index": choice["index"], "finish_reason": None,
                                                "delta": {"role": "assistant", "content": text}}]})
            events.append({**head, "choices": [{"index": choice["index"], "delta": {},
                                                "finish_reason": choice["finish_reason"]}]})
        else:
            events.append({**head, "choices": [{**choice}]})
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append({**head, "choices": [], "usage": answer["usage"]})
    lines = [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


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


