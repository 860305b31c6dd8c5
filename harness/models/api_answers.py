"""Helpers of the api: backend: reading servers' answers (echoed logprobs, special tokens), the
local tokenizer option, and the pieces of its fingerprint (code version, client libraries)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.models.tokenized import TokenPair


def clip_pair(pair: TokenPair, limit: int) -> TokenPair:
    """A pair cut to `limit` tokens from the left, as TokenizedLM.score_pairs cuts it."""
    ctx, cont = pair
    if len(ctx) + len(cont) <= limit:
        return pair
    keep = limit - len(cont)
    if keep < 1:
        whole = (list(ctx) + list(cont))[-limit:]
        return whole[:1], whole[1:]
    return ctx[-keep:], cont


def code_version() -> str:
    """The harness version and a hash of the code that turns answers into results."""
    from harness import __version__

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("api.py", "api_answers.py", "api_spec.py", "http.py", "tokenized.py", "base.py"):
        digest.update((here / name).read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"


def library_versions(local_tokenizer: bool) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("jinja2", *(("transformers", "tokenizers") if local_tokenizer else ())):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def echo_logprobs(answer: Any, spec: str) -> dict[str, Any]:
    try:
        logprobs = answer["choices"][0]["logprobs"]
        if isinstance(logprobs.get("token_logprobs"), list):
            return logprobs
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    raise HarnessError(f"{spec}: the server's answer carries no prompt logprobs")


def all_greedy(scored: Sequence[float], tops: Sequence[Any]) -> bool:
    """Every scored token is the most likely one at its position (ties count as greedy)."""
    for logprob, top in zip(scored, tops):
        if not isinstance(top, dict) or not top or logprob < max(top.values()):
            return False
    return len(tops) == len(scored)


def token_text(value: Any) -> str | None:
    """A special token as text: tokenizer configs write it as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(name: str):  # noqa: ANN202 - a transformers tokenizer
    from transformers import AutoTokenizer

    from harness.models.source import resolve_source

    source = resolve_source(name)
    try:
        if source.kind == "gguf":
            return AutoTokenizer.from_pretrained(str(source.path.parent), gguf_file=source.path.name)
        return AutoTokenizer.from_pretrained(source.location)
    except OSError as err:
        raise HarnessError(f"tokenizer {name!r} could not be loaded: {str(err).splitlines()[0]}") from None
