"""The user cache directory and the SQLite response cache keyed by (model fingerprint, request)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


class ResponseCache:
    """Responses stored by (model fingerprint, request key). Each `put_many` is one committed
    transaction, so a run killed at any moment keeps every batch it finished."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " model TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (model, key))"
        )
        self._db.commit()

    def get_many(self, model: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM responses WHERE model = ? AND key IN ({marks})",
                    [model, *chunk],
                )
                for key, value in rows:
                    found[key] = json.loads(value)
        return found

    def put_many(self, model: str, items: dict[str, Any]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (model, key, value) VALUES (?, ?, ?)",
                [(model, k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()],
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
