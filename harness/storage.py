"""Files that are never half-written, never overwritten by accident, and never outside their folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    The temporary file is created with mode 0666 so the process umask applies as for any
    other file (results are meant to be shared); nothing reads or changes the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def create_exclusive(path: Path, text: str) -> bool:
    """Create `path` with `text` only if nothing is there yet; False if something is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=_default) + "\n"


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, to_json(data))


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    lines = (json.dumps(r, ensure_ascii=False, default=_default) for r in records)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def slug(text: str, length: int = 60) -> str:
    """A file-name-safe form of a name: no separators, no leading dots, at most `length` characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:length] or "x"


def unique_slug(text: str, used: set[str], length: int = 60) -> str:
    """`slug(text)`, made unique among `used` (which it joins) with a short hash of the name."""
    name = slug(text, length)
    if name in used:
        name = f"{slug(text, length - 9)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    n = 2
    base = name
    while name in used:
        name, n = f"{base}-{n}", n + 1
    used.add(name)
    return name


def inside(base: Path, relative: str | os.PathLike) -> Path | None:
    """`base / relative` if that stays inside `base` (no absolute path, no `..` out, no link out); else None."""
    rel = Path(relative)
    if rel.is_absolute() or rel.drive or not str(relative).strip():
        return None
    base = Path(base).resolve()
    target = (base / rel).resolve()
    return target if target == base or base in target.parents else None


def safe_join(base: Path, relative: str | os.PathLike) -> Path:
    """`inside`, raising a HarnessError (a bug or a hostile name) when the path would leave `base`."""
    target = inside(base, relative)
    if target is None:
        raise HarnessError(f"refusing to write {relative!s}: the path leaves {base}")
    return target


def json_lines(lines: Iterable[str], where: object) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a JSON-lines text; a line that is not JSON
    is a one-line error naming `where` (the file) and the line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise HarnessError(f"{where}, line {number}: not valid JSON ({err.msg})") from None
