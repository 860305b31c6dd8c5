"""A damaged response cache is never read as answers: it is refused with the file named and the
ways out, or, with recovery on, moved aside (or its damaged values deleted) with a warning."""

from __future__ import annotations

import os
import sqlite3

import pytest

from harness.cache import CacheCorrupt, ResponseCache

KINDS = {"a": ("loglikelihood", None), "b": ("generate_until", None), "c": ("loglikelihood_rolling", None)}
GOOD = {"a": [-1.5, True], "b": "Paris", "c": [-42.0, 7]}


def filled(tmp_path) -> ResponseCache:
    cache = ResponseCache(tmp_path / "responses.sqlite", recover=False)
    cache.put_many("m", GOOD)
    cache.put_many("m", {f"pad{i}": "x" * 3000 for i in range(200)})  # several pages
    cache.close()
    return cache


def checkpoint(path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def truncate(path) -> None:
    checkpoint(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 3)


def random_bytes(path) -> None:
    checkpoint(path)
    path.write_bytes(os.urandom(path.stat().st_size))
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def bad_page(path) -> None:
    checkpoint(path)
    with open(path, "r+b") as f:
        f.seek(4096)  # page 2 (the table's b-tree)
        f.write(os.urandom(4096 * 3))


FILE_DAMAGE = {"truncated": truncate, "random bytes": random_bytes, "bad page": bad_page}


def damaged_file_cache(tmp_path, damage, recover: bool) -> ResponseCache:
    path = tmp_path / "responses.sqlite"
    filled(tmp_path)
    damage(path)
    cache = ResponseCache(path, recover=recover)
    cache.get_many("m", KINDS)  # some damage shows only when pages are read
    cache.get_many("m", [f"pad{i}" for i in range(200)])
    return cache


@pytest.mark.parametrize("damage", FILE_DAMAGE.values(), ids=FILE_DAMAGE.keys())
def test_a_damaged_file_is_refused_with_its_name(tmp_path, damage):
    with pytest.raises(CacheCorrupt) as err:
        damaged_file_cache(tmp_path, damage, recover=False)
    message = str(err.value)
    assert str(tmp_path / "responses.sqlite") in message and "HARNESS_RECOVER_CACHE=1" in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", FILE_DAMAGE.values(), ids=FILE_DAMAGE.keys())
def test_a_damaged_file_is_moved_aside_when_recovering(tmp_path, damage, capsys):
    cache = damaged_file_cache(tmp_path, damage, recover=True)
    assert "moved it to responses.sqlite.broken-" in capsys.readouterr().err
    assert list(tmp_path.glob("responses.sqlite.broken-*"))
    assert cache.get_many("m", KINDS) == {}  # nothing from the damaged file
    cache.put_many("m", GOOD)
    assert cache.get_many("m", KINDS) == GOOD


BAD_VALUES = {"not JSON": "{broken", "text for a loglikelihood": '"Paris"', "three numbers": "[1, 2, 3]",
              "a bool for a number": "[true, true]", "null": "null"}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_damaged_value_is_refused_or_deleted_never_scored(tmp_path, value, capsys):
    path = tmp_path / "responses.sqlite"
    filled(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET value = ? WHERE key = 'a'", (value,))
    with pytest.raises(CacheCorrupt, match="1 cached answer"):
        ResponseCache(path, recover=False).get_many("m", KINDS)
    cache = ResponseCache(path, recover=True)
    assert cache.get_many("m", KINDS) == {"b": "Paris", "c": [-42.0, 7]}
    assert "deleted them" in capsys.readouterr().err
    assert cache.get_many("m", KINDS) == {"b": "Paris", "c": [-42.0, 7]}  # gone, not refused again


def test_an_intact_cache_reads_back_exactly(tmp_path):
    filled(tmp_path)
    assert ResponseCache(tmp_path / "responses.sqlite", recover=False).get_many("m", KINDS) == GOOD
