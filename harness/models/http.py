"""Asynchronous JSON over HTTP for the api: backend: bounded concurrency, a per-request timeout,
and retries with exponential backoff on 429, 5xx, timeouts and connection errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.errors import HarnessError

log = logging.getLogger("harness.models.api")
T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 409, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})


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
