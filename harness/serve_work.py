"""How `harness serve` runs model calls: off the request thread, a bounded number at a time, and
stopped when the client leaves or the server's deadline passes.

Each model call runs in its own thread while the request's thread watches the client's socket and
the clock. A call that must stop gets an exception raised inside it (CPython's
`PyThreadState_SetAsyncExc`), which lands at the next Python instruction: between two generated
tokens for every backend, whose token loops are Python. Cleanup runs as for any exception (`with`
and `finally` blocks), and every backend starts each request from a fresh state, so the next
request is unaffected.

Backends whose calls may run side by side (`hf`: read-only weights, a cache per call) get
`parallel` slots, so a long generation leaves room for other clients; the others (llama.cpp has
one context) get one slot. Sampled generation draws from torch's global generator, so sampled
calls also take one shared lock: a seeded request gives the same text whatever runs beside it.
"""

from __future__ import annotations

import ctypes
import select
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.2


class Cancelled(BaseException):
    """Raised inside a model call that must stop (BaseException: `except Exception` in library
    code must not swallow it)."""


class CallStopped(Exception):
    """A model call stopped before it finished: `reason` says why (the client left, or the deadline)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Workers:
    """At most `parallel` model calls at once; see the module docstring."""

    def __init__(self, parallel: int = 1, deadline: float | None = None):
        self.parallel = max(1, parallel)
        self.deadline = deadline  # seconds a call may take, waiting included; None: no limit
        self._slots = threading.BoundedSemaphore(self.parallel)
        self._sampling = threading.Lock()
        self._active: set[_Call] = set()
        self._active_lock = threading.Lock()
        self._stopping = False

    def call(self, fn: Callable[[], T], *, client_gone: Callable[[], bool] = lambda: False,
             sampled: bool = False) -> T:
        """fn() in a worker thread; CallStopped when the client leaves or the deadline passes."""
        started = time.monotonic()
        call = _Call(fn, self._slots, self._sampling if sampled and self.parallel > 1 else None)
        with self._active_lock:
            if self._stopping:
                raise CallStopped("the server is shutting down")
            self._active.add(call)
        call.thread.start()
        try:
            return self._watch(call, started, client_gone)
        finally:
            with self._active_lock:
                self._active.discard(call)

    def stop(self) -> None:
        """Stop every call in progress and wait for them: at shutdown, so that no thread is still
        inside the model (torch, llama.cpp) while the interpreter exits, which aborts the process
        ("terminate called without an active exception")."""
        with self._active_lock:
            self._stopping = True
            calls = list(self._active)
        for call in calls:
            call.cancel()

    def _watch(self, call: _Call, started: float, client_gone: Callable[[], bool]) -> T:
        while not call.done.wait(POLL_SECONDS):
            if client_gone():
                call.cancel()
                raise CallStopped("the client closed the connection")
            if self.deadline is not None and time.monotonic() - started > self.deadline:
                call.cancel()
                raise CallStopped(f"the request ran past the server's limit of {self.deadline:g} s "
                                  "(harness serve --request-timeout)")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]


class _Call:
    def __init__(self, fn: Callable[[], T], slots: threading.BoundedSemaphore, extra: threading.Lock | None):
        self.fn, self.slots, self.extra = fn, slots, extra
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._state = "waiting"  # -> running -> finished, or cancelled
        self._state_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="harness-serve-call")

    def _run(self) -> None:
        try:
            with ExitStack() as stack:
                stack.enter_context(self.slots)
                if self.extra is not None:
                    stack.enter_context(self.extra)
                with self._state_lock:
                    if self._state == "cancelled":
                        return
                    self._state = "running"
                try:
                    self.result = self.fn()
                except Exception as err:  # noqa: BLE001 - handed to the request thread
                    self.error = err
                finally:
                    with self._state_lock:
                        self._state = "finished"
        except Cancelled:
            pass  # delivered after fn returned, or while leaving: nothing left to stop
        finally:
            self.done.set()

    def cancel(self) -> None:
        """Stop the call (or keep it from starting) and wait until its slot is free again."""
        with self._state_lock:
            if self._state == "running":
                _raise_in(self.thread, Cancelled)
            elif self._state == "waiting":
                self._state = "cancelled"
        # A call inside one long C operation (a forward pass) stops when that returns.
        self.done.wait(60)


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    ident = thread.ident
    if ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


def peer_closed(sock: socket.socket) -> bool:
    """True when the client has closed its side (a readable socket with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
