"""Answer a task's requests: deduplicate, read the cache, run the rest in fixed chunks, save each
chunk as soon as it is done (so an interrupted run resumes where it stopped)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness import distributed, progress
from harness.cache import ResponseCache
from harness.models.base import LanguageModel
from harness.adapters import Instance, OutputAdapter
from harness.requests import request_key


@dataclass
class ExecutionStats:
    n_requests: int = 0
    n_unique: int = 0
    n_cached: int = 0
    n_computed: int = 0
    model_seconds: float = 0.0
    tokens: int | None = None  # tokens of the requests computed (None: the backend cannot count them)
    tokens_requested: int | None = None  # tokens of every unique request, cached ones included
    # token positions the model actually ran: fewer than `tokens` where requests shared a prefix
    # (backends with a `tokens_computed` counter); else `tokens`
    tokens_computed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        tps = self.tokens / self.model_seconds if self.tokens and self.model_seconds > 0 else None
        return {
            "n_requests": self.n_requests, "n_unique": self.n_unique, "n_cached": self.n_cached,
            "n_computed": self.n_computed, "model_seconds": round(self.model_seconds, 3),
            "tokens": self.tokens, "tokens_per_second": round(tps, 2) if tps else None,
            "tokens_requested": self.tokens_requested, "tokens_computed": self.tokens_computed,
        }

    @property
    def computed_share(self) -> float | None:
        """tokens_computed / tokens_requested: what the cache and shared prefixes left to run."""
        if self.tokens_computed is None or not self.tokens_requested:
            return None
        return self.tokens_computed / self.tokens_requested


def execute(
    model: LanguageModel,
    instances: Sequence[Instance],
    *,
    cache: ResponseCache | None,
    label: str,
    chunk_size: int = 32,
    rolling: dict[str, Any] | None = None,
) -> tuple[list[list[Any]], ExecutionStats]:
    """Responses for every instance's requests, in order, plus what it cost.

    Under torchrun each rank computes a share of every chunk and the shares are gathered; only
    rank 0 has a cache (the runner gives the others none), and its answers are broadcast."""
    rolling = rolling or {}
    group = distributed.current()
    stats = ExecutionStats()
    fingerprint = model.fingerprint
    keys_per_instance: list[list[str]] = []
    unique: dict[str, tuple[OutputAdapter, Any]] = {}
    for inst in instances:
        keys = []
        adapter = inst.adapter
        for req in inst.requests:
            key = request_key(adapter.method, adapter.payload(req, rolling))
            unique.setdefault(key, (adapter, req))
            keys.append(key)
        keys_per_instance.append(keys)
        stats.n_requests += len(keys)
    stats.n_unique = len(unique)
    answers: dict[str, Any] = cache.get_many(fingerprint, unique) if cache else {}
    if group is not None:
        answers = group.broadcast(answers)
        chunk_size *= group.world_size
    stats.n_cached = len(answers)
    missing = [k for k in unique if k not in answers]
    stats.n_computed = len(missing)
    chunks = _chunks(unique, chunk_size)
    counter = getattr(model, "count_tokens", None)
    tokens = 0 if counter else None
    computed = 0 if counter else None
    bar = progress.bar(len(missing), label, "req", disable=not missing or not distributed.is_main())
    try:
        for chunk in chunks:
            todo = [k for k in chunk if k not in answers]
            if not todo:
                continue
            # one backend call per method (adapters that share a method share its calls)
            by_method: dict[str, list[str]] = {}
            for k in todo:
                by_method.setdefault(unique[k][0].method, []).append(k)
            for keys in by_method.values():
                adapter = unique[keys[0]][0]
                mine = group.shard(keys) if group is not None else keys
                reqs = [unique[k][1] for k in mine]
                started = time.perf_counter()
                ran_before = _ran(model, adapter.method)
                # Backends that answer one request at a time (servers) hand over each answer as it
                # arrives; it is cached at once, so a server dying mid-chunk loses none of them.
                on_answer = None
                if cache and group is None:
                    on_answer = lambda i, r, mine=mine: cache.put_many(fingerprint, {mine[i]: _jsonable(r)})  # noqa: E731
                results = adapter.call(model, reqs, rolling, on_answer) if reqs else []
                if tokens is not None and reqs:
                    n = adapter.count_tokens(counter, reqs, results)
                    tokens += n
                    computed += n if ran_before is None else _ran(model, adapter.method) - ran_before
                fresh = {k: _jsonable(r) for k, r in zip(mine, results)}
                if group is not None:
                    fresh = group.gather(fresh)
                stats.model_seconds += time.perf_counter() - started
                answers.update(fresh)
                if cache:
                    cache.put_many(fingerprint, fresh)
                bar.update(len(keys))
    finally:
        bar.close()
    if group is not None and tokens is not None:
        tokens = int(group.total(tokens))
        computed = int(group.total(computed))
    stats.tokens, stats.tokens_computed = tokens, computed
    if tokens is not None:
        stats.tokens_requested = tokens + _cached_tokens(counter, unique, answers, set(missing))
    return [[answers[k] for k in keys] for keys in keys_per_instance], stats


def _chunks(unique: dict[str, tuple[OutputAdapter, Any]], size: int) -> list[list[str]]:
    """The requests in backend calls of about `size` each. Chunks depend only on the requests,
    never on what the cache holds, so a resumed run computes exactly the batches the first run
    would have. Requests with a share key (a continuation's context) are ordered by it and a
    chunk never ends inside a run of equal keys, so a question's choices, and neighbouring
    documents behind one few-shot block, reach the backend together and share their prefix;
    the others go longest first."""
    def share(k: str) -> tuple[str, str | None]:
        adapter, req = unique[k]
        return adapter.method, adapter.share_key(req)

    def order(k: str) -> tuple[Any, ...]:
        method, key = share(k)
        return method, key is not None, key or "", -unique[k][0].length(unique[k][1]), k

    chunks: list[list[str]] = []
    current: list[str] = []
    last: tuple[str, str | None] | None = None
    for k in sorted(unique, key=order):
        here = share(k)
        if len(current) >= size and (here[1] is None or here != last):
            chunks.append(current)
            current = []
        current.append(k)
        last = here
    return chunks + [current] if current else chunks


def _ran(model: LanguageModel, method: str) -> int | None:
    """The model's running count of token positions it computed, for the methods it counts
    (scoring; generation is counted by the adapter); None where it keeps no count."""
    value = getattr(model, "tokens_computed", None)
    return value if isinstance(value, int) and method != "generate_until" else None


def _cached_tokens(counter: Any, unique: dict[str, tuple[OutputAdapter, Any]], answers: dict[str, Any],
                   computed: set[str]) -> int:
    """Tokens of the requests the cache answered (counted the same way as computed ones)."""
    by_method: dict[str, list[str]] = {}
    for k in unique:
        if k not in computed:
            by_method.setdefault(unique[k][0].method, []).append(k)
    return sum(unique[keys[0]][0].count_tokens(counter, [unique[k][1] for k in keys], [answers[k] for k in keys])
               for keys in by_method.values())


def _jsonable(result: Any) -> Any:
    return list(result) if isinstance(result, tuple) else result
