"""Asynchronous JSON over HTTP for the api: backend: a concurrency limit that adapts to rate
limits, a per-request timeout, and retries with exponential backoff on 429, 5xx, timeouts and
connection errors, within a budget of retries for the whole run.

Rate limits (429) shrink the number of requests in flight by a factor 0.8 (never below 1); it grows
back by one after as many successes in a row as the current limit, up to `concurrency`, as
inspect_ai adapts its connections. A Retry-After from the server (seconds or an HTTP date) is
waited out exactly, up to RETRY_AFTER_MAX; without one, the backoff doubles up to backoff_max.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.errors import HarnessError

log = logging.getLogger("harness.models.api")
T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 409, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})
RETRY_AFTER_MAX = 600.0  # seconds: a server asking for longer is treated as down
SHRINK = 0.8


# -- HTTP: concurrency, timeout, retries ---------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # attempts after the first, per request
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 60.0
    budget: int | None = None  # retries for all requests together; None: no limit

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `attempt` (0-based): the server's Retry-After when it gives
        one (up to RETRY_AFTER_MAX), else the backoff, doubling up to backoff_max."""
        if retry_after is not None:
            return max(0.0, min(retry_after, RETRY_AFTER_MAX))
        return min(self.backoff_max, self.backoff * 2**attempt)


class HTTPStatusError(HarnessError):
    """An answer that retrying will not change (a 4xx other than 408, 409, 425 and 429, or 501)."""

    def __init__(self, status: int, url: str, message: str):
        super().__init__(f"the server at {url} answered {status}: {message}")
        self.status = status


class ServerUnavailable(HarnessError):
    """No usable answer after every retry: connection errors, timeouts, 429 or 5xx."""


class _Limiter:
    """At most `int(client.limit)` requests in flight, on one event loop."""

    def __init__(self, client: JSONClient):
        self.client = client
        self.in_flight = 0
        self.cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.in_flight < max(1, int(self.client.limit)))
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self.cond:
            self.in_flight -= 1
            self.cond.notify_all()


class JSONClient:
    """JSON over HTTP with at most `concurrency` requests in flight (fewer while the server rate
    limits), a timeout per request and retries with backoff. Each call runs its own event loop
    (aiohttp); the limit, and the count of retries, carry over from call to call."""

    def __init__(self, *, headers: dict[str, str], concurrency: int, timeout: float, policy: RetryPolicy):
        self._headers = dict(headers)
        self.concurrency = concurrency
        self.limit = float(concurrency)  # requests in flight now: shrinks on 429, grows back
        self._successes = 0
        self.timeout = timeout
        self.policy = policy
        self.retries_made = 0
        self.rate_limited = 0  # 429 answers seen

    def get(self, url: str, *, retry: bool = True) -> Any:
        return _run(self._many([("GET", url, None)], retry))[0]

    def post(self, url: str, payload: dict[str, Any], *, retry: bool = True) -> Any:
        return _run(self._many([("POST", url, payload)], retry))[0]

    def post_many(self, url: str, payloads: Sequence[dict[str, Any]],
                  on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Answers in the order of `payloads`; a request that fails for good cancels the others.
        `on_result(index, answer)` is called as each answer arrives (to save it at once)."""
        calls = [("POST", url, p) for p in payloads]
        return _run(self._many(calls, True, on_result)) if payloads else []

    async def _many(self, calls: list[tuple[str, str, Any]], retry: bool,
                    on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        import aiohttp

        limiter = _Limiter(self)
        async with aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        ) as session:

            async def one(index: int, method: str, url: str, payload: Any) -> Any:
                answer = await self._with_retries(session, limiter, method, url, payload, retry)
                if on_result is not None:
                    on_result(index, answer)
                return answer

            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(one(i, *call)) for i, call in enumerate(calls)]
            except BaseExceptionGroup as errors:
                raise errors.exceptions[0] from None
        return [t.result() for t in tasks]

    def _rate_limited(self) -> None:
        self.rate_limited += 1
        self._successes = 0
        before = int(self.limit)
        self.limit = max(1.0, self.limit * SHRINK)
        if int(self.limit) < before:
            log.warning("the server is rate limiting: %d requests in flight from now on (of %d)",
                        int(self.limit), self.concurrency)

    def _succeeded(self) -> None:
        self._successes += 1
        if self.limit < self.concurrency and self._successes >= int(self.limit):
            self.limit = min(float(self.concurrency), int(self.limit) + 1.0)
            self._successes = 0

    async def _with_retries(self, session, limiter: _Limiter, method: str, url: str, payload: Any,  # noqa: ANN001
                            retry: bool) -> Any:
        import aiohttp

        attempts = 1 + (self.policy.retries if retry else 0)
        started = time.monotonic()
        last = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                async with limiter, session.request(method, url, json=payload) as response:
                    body = await response.text()
                    if response.status < 400:
                        try:
                            answer = json.loads(body)
                        except ValueError:
                            raise HarnessError(f"the server at {url} answered with something other than JSON") from None
                        self._succeeded()
                        return answer
                    message = _error_message(body)
                    if response.status not in RETRY_STATUSES:
                        raise HTTPStatusError(response.status, url, message)
                    if response.status == 429:
                        self._rate_limited()
                    last = f"HTTP {response.status}: {message}"
                    retry_after = _seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
                last = f"no answer within {self.timeout:g} s" if isinstance(err, TimeoutError) else (
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": "))
            if retry_after is not None and retry_after > RETRY_AFTER_MAX:
                break
            budget = self.policy.budget
            if budget is not None and self.retries_made >= budget:
                raise ServerUnavailable(
                    f"the server at {url} keeps failing (last: {last}): this run's budget of {budget} retries "
                    f"is spent (retry_budget= in the model spec); {RESUME}")
            if attempt + 1 < attempts:
                wait = self.policy.delay(attempt, retry_after)
                self.retries_made += 1
                log.warning("%s %s failed (%s); retry %d of %d in %.1f s", method, url, last, attempt + 1,
                            attempts - 1, wait)
                await asyncio.sleep(wait)
        raise ServerUnavailable(
            f"the server at {url} did not answer after {attempt + 1} attempt(s) in "
            f"{time.monotonic() - started:.0f} s (last: {last}); {RESUME}"
        )


RESUME = ("the answers already received are cached, so the same command resumes where it stopped "
          "once the server is back")


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
    """Retry-After as seconds from now: a number of seconds or an HTTP date; None if neither."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


# -- the spec ------------------------------------------------------------------------------------
