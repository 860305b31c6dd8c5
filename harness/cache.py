"""The user cache directory and the SQLite response cache keyed by (model fingerprint, request)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")

CACHE_ENV = "HARNESS_CACHE_DIR"
_override: Path | None = None


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Move the cache for this process (the CLI's --cache-dir)."""
    global _override
    _override = Path(path).expanduser() if path else None


def cache_dir() -> Path:
    """$HARNESS_CACHE_DIR, else the platform's user cache directory (~/.cache/harness on Linux)."""
    if _override is not None:
        return _override
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("harness"))


def model_cache_dir() -> Path:
    """Converted model copies: $HARNESS_MODEL_CACHE, else <cache dir>/models."""
    env = os.environ.get("HARNESS_MODEL_CACHE")
    return Path(env).expanduser() if env else cache_dir() / "models"


RECOVER_ENV = "HARNESS_RECOVER_CACHE"
log = logging.getLogger(__name__)

# What each kind of request is answered with, to recognize a damaged value before it is scored.
_SHAPES: dict[str, Callable[[Any], bool]] = {
    "loglikelihood": lambda v: isinstance(v, list) and len(v) == 2 and _number(v[0]) and isinstance(v[1], bool),
    "loglikelihood_rolling": lambda v: isinstance(v, list) and len(v) == 2 and _number(v[0])
    and isinstance(v[1], int) and not isinstance(v[1], bool),
    "generate_until": lambda v: isinstance(v, str),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class CacheCorrupt(HarnessError):
    """The response cache file is damaged; the message names it and the ways out."""


class ResponseCache:
    """Responses stored by (model fingerprint, request key). Each `put_many` is one committed
    transaction, so a run killed at any moment keeps every batch it finished.

    A damaged file (not a database, truncated, a bad page) or a damaged value (not JSON, not the
    shape its request kind answers) is never read as an answer: it raises CacheCorrupt naming the
    file, unless recovery is on (`recover=True`, or $HARNESS_RECOVER_CACHE=1): then a damaged file
    is moved aside (`responses.sqlite.broken-<time>`) and a fresh one started, damaged values are
    deleted, and the answers are computed again, with a warning."""

    def __init__(self, path: Path | None = None, *, recover: bool | None = None):
        self.path = path or cache_dir() / "responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recover = os.environ.get(RECOVER_ENV, "") not in ("", "0") if recover is None else recover
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._guarded(self._open)

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " model TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (model, key))"
        )
        self._db.commit()

    def _guarded(self, operation: Callable[[], T]) -> T:
        """Run a database operation; on a damaged file, refuse or (recovering) start afresh and retry."""
        try:
            return operation()
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and "malformed" not in str(err):
                raise HarnessError(f"{self.path}: the response cache cannot be used ({err}); "
                                   "check the folder's permissions and free space, or pass --no-cache") from None
            self._damaged(f"the file is damaged: {err}")
            return operation()

    def _damaged(self, why: str) -> None:
        if not self.recover:
            raise CacheCorrupt(
                f"{self.path}: {why}; delete or move the file (cached answers are then computed again), "
                f"or set {RECOVER_ENV}=1 to have it moved aside and a fresh cache started") from None
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.broken-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(f"{aside}{suffix}")
        warning = f"warning: {self.path}: {why}; moved it to {aside.name} and started a fresh cache"
        print(warning, file=sys.stderr)
        log.info(warning)
        self._open()

    def get_many(self, model: str, keys: Iterable[str] | Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
        """The cached answers among `keys`. Given a mapping key -> (request kind, request), as the
        executor has, each value is also checked to have the shape its kind answers."""
        kinds = {k: v[0] for k, v in keys.items()} if isinstance(keys, Mapping) else {}
        keys = list(keys)
        found: dict[str, Any] = {}
        bad: list[str] = []
        with self._lock:
            rows = self._guarded(lambda: self._select(model, keys))
            for key, value in rows:
                try:
                    answer = json.loads(value)
                except (ValueError, TypeError):
                    bad.append(key)
                    continue
                shape = _SHAPES.get(kinds.get(key, ""))
                if shape is not None and not shape(answer):
                    bad.append(key)
                    continue
                found[key] = answer
            if bad:
                self._bad_values(model, bad)
        return found

    def _select(self, model: str, keys: list[str]) -> list[tuple[str, str]]:
        assert self._db is not None
        rows: list[tuple[str, str]] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows.extend(self._db.execute(
                f"SELECT key, value FROM responses WHERE model = ? AND key IN ({marks})", [model, *chunk]))
        return rows

    def _bad_values(self, model: str, keys: list[str]) -> None:
        why = f"{len(keys)} cached answer(s) are damaged (not JSON, or not the shape of their request)"
        if not self.recover:
            raise CacheCorrupt(
                f"{self.path}: {why}; set {RECOVER_ENV}=1 to delete them and compute them again, "
                "or delete the file") from None
        assert self._db is not None
        self._db.executemany("DELETE FROM responses WHERE model = ? AND key = ?", [(model, k) for k in keys])
        self._db.commit()
        print(f"warning: {self.path}: {why}; deleted them, they are computed again", file=sys.stderr)

    def put_many(self, model: str, items: dict[str, Any]) -> None:
        rows = [(model, k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]

        def write() -> None:
            assert self._db is not None
            self._db.executemany("INSERT OR REPLACE INTO responses (model, key, value) VALUES (?, ?, ?)", rows)
            self._db.commit()

        with self._lock:
            self._guarded(write)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
