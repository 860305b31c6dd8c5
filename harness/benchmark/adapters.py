"""How the benchmark watches a backend generate: one callback per produced token.

The hook is a public method a backend defines:

    stream_token_ids(prompts: list[list[int]], max_new_tokens: int,
                     on_token: Callable[[int, int], None]) -> list[list[int]]

greedy, EOS ignored, exactly max_new_tokens tokens per row, calling on_token(row, token) as soon as
each token exists on the host (after the step that made it has finished on the device), through
the backend's own generation path. A batched backend calls it for every row after each step; a
backend that runs one sequence at a time calls it row after row. The hf, scratch and llamacpp
backends define it; any backend registered from outside can too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.errors import HarnessError

OnToken = Callable[[int, int], None]
Streamer = Callable[[Sequence[Sequence[int]], int, OnToken], list[list[int]]]


def token_streamer(lm) -> Streamer:
    """The backend's `stream_token_ids`."""
    own = getattr(lm, "stream_token_ids", None)
    if callable(own):
        return own
    backend = getattr(lm, "backend", None) or getattr(getattr(lm, "info", None), "backend", None)
    raise HarnessError(
        f"backend {backend!r} cannot be benchmarked: it has no stream_token_ids(prompts, max_new_tokens, on_token) "
        "method (harness/benchmark/adapters.py says what it must do)"
    )
