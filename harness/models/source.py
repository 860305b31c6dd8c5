"""Where a model's weights come from: a built-in name, a local directory, a .gguf file or a hub id."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.models.zoo import ZOO

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class WeightSource:
    kind: str  # "gguf" | "dir" | "hub"
    location: str  # file path, directory path or hub id
    name: str  # short display name

    @property
    def path(self) -> Path:
        return Path(self.location)


def resolve_source(name: str) -> WeightSource:
    """Turn the part of a model spec after the backend prefix into a weight source."""
    if name in ZOO:
        return WeightSource("gguf", str(ZOO[name].path()), name)
    path = Path(os.path.expanduser(name))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HarnessError(f"model file {name} does not exist; give the path of a .gguf file")
        return WeightSource("gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HarnessError(
                f"model directory {name} has no config.json; give a Hugging Face model directory"
            )
        return WeightSource("dir", str(path.resolve()), path.name)
    if _HUB_ID.match(name) and not name.startswith((".", "/")):
        return WeightSource("hub", name, name.split("/")[-1])
    known = ", ".join(sorted(ZOO))
    raise HarnessError(
        f"unknown model {name!r}: not a built-in name ({known}), a local directory, "
        "a .gguf file or a Hugging Face hub id (owner/name); `harness models` lists the built-ins"
    )


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered beside the user cache keyed by (path, size, mtime)."""
    from harness.cache import model_cache_dir

    st = path.stat()
    memo = model_cache_dir() / "file-hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    known[key] = digest
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(memo)
    except OSError:
        pass
    return digest


def source_fingerprint(source: WeightSource) -> str:
    """A content identity for the weights: the GGUF's sha256, a directory's file hashes, or the hub
    id (plus revision, resolved by the backend).

    A directory counts every file under it, subfolders and code (`*.py`, which trust_remote_code
    runs) included, by relative path and content; only hidden entries (`.git`, `.cache`: version
    control and download bookkeeping, which no loader reads) are left out."""
    if source.kind == "gguf":
        return file_sha256(source.path)
    if source.kind == "dir":
        h = hashlib.sha256()
        root = source.path
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                continue
            h.update(rel.as_posix().encode() + b"\0")
            h.update(file_sha256(f).encode())
        return h.hexdigest()
    return hashlib.sha256(source.location.encode()).hexdigest()
