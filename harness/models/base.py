"""The backend contract: three batch methods, a fingerprint and an info record.

A backend never sees tasks; a task never sees a backend's internals.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.requests import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ModelInfo,
    RollingResponse,
)


class LanguageModel(ABC):
    """A language model the harness can evaluate."""

    @abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]:
        """For each (context, continuation): log P(continuation | context) and whether greedy."""

    @abstractmethod
    def loglikelihood_rolling(
        self, texts: Sequence[str], *, max_length: int | None = None, stride: int | None = None
    ) -> list[RollingResponse]:
        """For each text: its total log-probability and the number of tokens scored.

        Windows of `max_length` tokens (default: the model's maximum) advance by `stride` tokens
        (default: `max_length`, lm-evaluation-harness's disjoint windows); a smaller stride keeps
        earlier tokens as context and scores only the new ones (sliding-window perplexity).
        """

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        """For each request: the continuation, cut before the first stop sequence."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the weights and every setting that changes outputs (the cache key)."""

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Name, backend, parameter count, dtype, device."""

    @property
    def chat_template(self) -> str | None:
        """The model's chat template source, or None when it has none."""
        return None

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        """Render chat messages to the prompt text, ending with the assistant's turn opened."""
        raise HarnessError(
            f"model {self.info.spec!r} has no chat template; set `chat_template: never` in the task"
        )

    def close(self) -> None:
        """Release resources (servers, memory). Safe to call twice."""


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """Cut a generated text before the earliest stop sequence."""
    end = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                end = min(end, i)
    return text[:end]


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_length: int, stride: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """Split a token sequence into (context, targets) windows that score every token exactly once.

    The input of each window is context + targets[:-1] shifted: the model sees
    `(context + targets)[:-1]` and predicts `targets`. The first window is conditioned on
    `prefix_token`. With stride == max_length (the default) windows are disjoint, as
    lm-evaluation-harness's `get_rolling_token_windows` with context_len=1; with a smaller stride
    each window keeps up to max_length - stride earlier tokens as context and scores only the
    tokens it has not scored yet.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length]; got {stride} for max_length {max_length}")
    seq = [prefix_token, *tokens]  # seq[i] predicts seq[i + 1]
    windows: list[tuple[list[int], list[int]]] = []
    scored = 0  # number of tokens of `tokens` scored so far
    while scored < len(tokens):
        # Disjoint windows: predict max_length tokens from the preceding one input token each.
        # Strided windows: advance by `stride` new tokens, keep the rest as context.
        n_new = min(max_length if not windows else stride, len(tokens) - scored)
        end = scored + n_new  # targets are tokens[scored:end] == seq[scored+1 : end+1]
        start = max(0, end - max_length)  # the window's inputs are seq[start:end]
        inputs = seq[start:end]
        targets = seq[start + 1 : end + 1]
        n_context = len(targets) - n_new
        windows.append((inputs[: n_context + 1], targets[n_context:]))
        scored = end
    return windows


# -- the cache key --------------------------------------------------------------------------------

# Always part of a backend's code version: the request handling every backend shares.
SHARED_CODE = ("harness.models.base", "harness.models.tokenized", "harness.models.source", "harness.requests")


@functools.cache
def code_version(*modules: str) -> str:
    """sha256 over the source of these modules (a package: every .py file under it, by relative
    path), so any edit to the code that computes a backend's numbers changes its cache key."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        module = importlib.import_module(name)
        origin = Path(module.__file__ or "")
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f"{name}:{f.relative_to(origin.parent).as_posix()}\0".encode())
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the libraries that compute a backend's numbers ("absent" if none)."""
    out = {}
    for dist in distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def fingerprint_parts(backend: str, *, weights: str, settings: Mapping[str, Any],
                      code: Sequence[str] = (), libraries: Sequence[str] = ()) -> dict[str, Any]:
    """What a backend's cache key holds (docs/cache.md): the backend, the weights' content identity,
    every setting that changes an output, the hash of the backend's source (plus SHARED_CODE), and
    the versions of the libraries that compute the numbers."""
    return {
        "backend": backend,
        "weights": weights,
        "settings": dict(settings),
        "code": code_version(*SHARED_CODE, *code),
        "libraries": library_versions(*libraries),
    }


def hash_parts(parts: Mapping[str, Any]) -> str:
    """sha256 of fingerprint parts, in a canonical JSON form."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def make_fingerprint(backend: str, *, weights: str, settings: Mapping[str, Any],
                     code: Sequence[str] = (), libraries: Sequence[str] = ()) -> str:
    """The cache key of a loaded model: the hash of `fingerprint_parts` (every backend calls this)."""
    return hash_parts(fingerprint_parts(backend, weights=weights, settings=settings, code=code, libraries=libraries))
