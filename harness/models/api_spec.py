"""The api: backend's spec (`api:URL[?OPTION=VALUE&...][#MODEL]`), its API key, and the chat
template a server publishes, rendered as transformers renders it.

Spec: `api:URL[?OPTION=VALUE&...][#MODEL]`

- URL is the server's OpenAI base URL, as OpenAI clients take it: `http://127.0.0.1:8000/v1`.
- MODEL is the model id the server knows; by default the first one its /v1/models lists.
- OPTIONS (also keyword arguments of `load_model`):
  `concurrency=8` requests in flight at most (fewer while the server answers 429: x0.8 per rate
  limit, one more after as many successes in a row); `timeout=300` seconds per request;
  `retries=5` retries of a request after a 429, a 5xx, a timeout or a connection error,
  `backoff=1` seconds before the first one, doubling up to `backoff_max=60` (the server's
  Retry-After wins when it gives one); `retry_budget=100` retries for the whole run, all requests
  together (then the run stops, resumable; the count is in the results' model info);
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
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from harness.errors import HarnessError

DEFAULTS: dict[str, Any] = {
    "concurrency": 8, "timeout": 300.0, "retries": 5, "backoff": 1.0, "backoff_max": 60.0,
    "tokenizer": "auto", "chat": "auto", "max_length": None, "prompt_logprobs": "auto",
    "prefix_token_id": None, "api_key_env": None, "retry_budget": 100,
}
KEY_ENVS = ("HARNESS_API_KEY", "OPENAI_API_KEY")


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
        for key in ("concurrency", "retries", "max_length", "prefix_token_id", "retry_budget"):
            if options[key] is not None:
                options[key] = int(options[key])
        for key in ("timeout", "backoff", "backoff_max"):
            options[key] = float(options[key])
    except ValueError as err:
        raise HarnessError(f"api model spec: {err}; numeric options take numbers") from None
    if options["concurrency"] < 1 or options["retries"] < 0 or options["timeout"] <= 0 or options["retry_budget"] < 0:
        raise HarnessError("api model spec: concurrency must be >= 1, retries and retry_budget >= 0 and timeout > 0")
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
