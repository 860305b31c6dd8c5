"""Reading task YAML files as lm-evaluation-harness does: safe YAML, `include:` chains, and
`!function` tags kept as references (never imported here).

A `!function utils.name` tag becomes a `FunctionRef`; whether it may run is decided later, by
the trust flag (see `harness.task_code`). Parsed files are cached by path, modification time and
size, so a tree where thousands of files include the same template parses each file once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

_Base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


@dataclass(frozen=True)
class FunctionRef:
    """`!function module.name` in a task file: Python code beside the YAML file."""

    qualname: str
    yaml_file: str
    line: int

    @property
    def module_path(self) -> Path:
        """The Python file lm-evaluation-harness imports: `<yaml dir>/<module as path>.py`, else
        the module found on sys.path (located without importing anything)."""
        return _locate(os.path.dirname(self.yaml_file), self.qualname.rpartition(".")[0])

    @property
    def function_name(self) -> str:
        return self.qualname.rpartition(".")[2]

    def __str__(self) -> str:
        return f"!function {self.qualname}"


_FOUND: dict[tuple[str, str], Path] = {}


def _locate(yaml_dir: str, module: str) -> Path:
    """Where `module` lives for a YAML file in `yaml_dir`; found files are remembered (a tree
    names the same utils.py from hundreds of files)."""
    key = (yaml_dir, module)
    if key in _FOUND:
        return _FOUND[key]
    relative = f"{module.replace('.', '/')}.py"
    beside = Path(yaml_dir) / relative
    for candidate in [beside, *(Path(entry or ".") / relative for entry in sys.path)]:
        if candidate.is_file():
            _FOUND[key] = candidate
            return candidate
    return beside


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """Safe YAML plus `!function` as a FunctionRef."""


def _function(loader: _Loader, node: yaml.Node) -> FunctionRef:
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return FunctionRef(str(value), loader.yaml_file, node.start_mark.line + 1)


_Loader.add_constructor("!function", _function)

# Paths are plain strings here: pathlib costs more than the parse itself on a tree of 14,000 files.
_CACHE: dict[str, tuple[tuple[int, int], Any, bool]] = {}  # path -> (mtime, size), value, has !function
_DIRTY: set[str] = set()
_CACHE_VERSION = 1


def _parse(path: str) -> tuple[Any, bool]:
    try:
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size)
        hit = _CACHE.get(path)
        if hit and hit[0] == key:
            return hit[1], hit[2]
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise HarnessError(f"{path}: cannot read task file ({err.strerror}); check the path") from None
    loader = _Loader(data)
    loader.yaml_file = path
    try:
        value = loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise HarnessError(f"{path}: {where}malformed YAML ({problem}); fix the syntax") from None
    finally:
        loader.dispose()
    has_code = b"!function" in data and bool(function_refs(value))
    _CACHE[path] = (key, value, has_code)
    _DIRTY.add(path)
    return value, has_code


def load_raw(path: str | Path, *, resolve_includes: bool = True, copy_values: bool = True) -> dict[str, Any]:
    """A task or group file as a mapping, its `include:` chain merged in (the including file's
    keys win; `task_list` is not inherited), exactly as lm-evaluation-harness's load_yaml.
    With copy_values=False the nested values are shared with the parse cache: read them only."""
    return load_raw_flagged(path, resolve_includes=resolve_includes, copy_values=copy_values)[0]


def load_raw_flagged(path: str | Path, *, resolve_includes: bool = True, copy_values: bool = True) -> tuple[dict[str, Any], bool]:
    """`load_raw`, and whether any file of the include chain holds a `!function`."""
    merged, has_code = _load(os.path.abspath(os.path.expanduser(path)), set(), resolve_includes)
    return (plain_copy(merged) if copy_values else merged), has_code


def plain_copy(value: Any) -> Any:
    """A copy of YAML data (mappings and lists copied, scalars shared): deepcopy, much faster."""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    return value


def _load(path: str, seen: set[str], resolve_includes: bool) -> tuple[dict[str, Any], bool]:
    # `seen` is shared by sibling includes, as in lm-evaluation-harness (which therefore also
    # refuses a file included twice through two branches).
    if path in seen:
        raise HarnessError(f"{path}: include cycle (the file includes itself); remove the loop")
    seen.add(path)
    raw, has_code = _parse(path)
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: a task file must be a YAML mapping of keys to values")
    if not resolve_includes or "include" not in raw:
        return raw, has_code
    cfg = dict(raw)
    includes = cfg.pop("include")
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        if not isinstance(inc, str):
            raise HarnessError(f"{path}: key 'include' must name a YAML file (or a list of them), not {inc!r}")
        target = inc if os.path.isabs(inc) else os.path.normpath(os.path.join(os.path.dirname(path), inc))
        try:
            inner, inner_code = _load(target, seen, resolve_includes)
        except HarnessError as err:
            if not os.path.isfile(target):
                raise HarnessError(f"{path}: key 'include': {target} does not exist; fix the path (it is relative to this file)") from None
            raise err from None
        has_code = has_code or inner_code
        if "task_list" in inner:
            inner = {k: v for k, v in inner.items() if k != "task_list"}
        merged.update(inner)
    merged.update(cfg)
    return merged, has_code


def _encode(value: Any) -> Any:
    if isinstance(value, FunctionRef):
        return {"\0function": [value.qualname, value.yaml_file, value.line]}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "\0function" in value:
            return FunctionRef(*value["\0function"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _hook(value: dict[str, Any]) -> Any:
    if len(value) == 1 and "\0function" in value:
        return FunctionRef(*value["\0function"])
    return value


def _cache_file(folder: Path) -> Path | None:
    try:
        from harness.cache import cache_dir

        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        return cache_dir() / "taskfiles" / f"{digest}.json"
    except Exception:  # noqa: BLE001 - no cache folder: parse every time
        return None


def preload(folder: Path) -> None:
    """Read the parse cache of a task folder: files unchanged since (same mtime and size) are
    not parsed again. JSON, not pickle: a cache file can hold data only."""
    target = _cache_file(folder)
    if target is None or not target.is_file():
        return
    try:
        data = json.loads(target.read_text(encoding="utf-8"), object_hook=_hook)
        if data.get("version") != _CACHE_VERSION:
            return
        for name, (mtime, size, value, has_code) in data["files"].items():
            _CACHE.setdefault(name, ((mtime, size), value, has_code))
    except (OSError, ValueError, TypeError, KeyError):
        return  # a damaged cache is only slower


def save(folder: Path) -> None:
    """Write the parse cache of a task folder when a file in it was parsed anew."""
    root = os.path.join(os.path.abspath(folder), "")
    if not any(p.startswith(root) for p in _DIRTY):
        return
    target = _cache_file(folder)
    if target is None:
        return
    files = {}
    for p, (k, v, c) in _CACHE.items():
        if p.startswith(root):
            try:
                encoded = _encode(v)
                if _decode(json.loads(json.dumps(encoded))) == v:  # only what JSON keeps exactly
                    files[p] = [k[0], k[1], encoded, c]
            except (TypeError, ValueError):
                continue
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "files": files}), encoding="utf-8")
        os.replace(tmp, target)
        _DIRTY.difference_update([p for p in _DIRTY if p.startswith(root)])
    except OSError:
        pass


def function_refs(value: Any, path: str = "") -> list[tuple[str, FunctionRef]]:
    """Every `!function` in a mapping, with the key path where it sits (`metric_list[].aggregation`)."""
    out: list[tuple[str, FunctionRef]] = []
    if isinstance(value, FunctionRef):
        out.append((path, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            out.extend(function_refs(item, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, list):
        for item in value:
            out.extend(function_refs(item, f"{path}[]"))
    return out
