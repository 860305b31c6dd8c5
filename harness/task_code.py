"""Task code: the Python that a task file's `!function` names, run only with --trust-task-code.

Modules are imported from the file beside the YAML, as lm-evaluation-harness does, once per file
and modification time. Every file that was imported is recorded with its SHA-256, so a results
file says which code produced its numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError
from harness.taskfile import FunctionRef

_MODULES: dict[Path, tuple[int, Any]] = {}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve(ref: FunctionRef, *, trusted: bool, key: str, ran: dict[str, str] | None = None) -> Callable[..., Any]:
    """The callable behind `!function module.name`; `ran` collects {file: sha256} of imported code."""
    if not trusted:
        raise HarnessError(
            f"{ref.yaml_file}: key {key!r} is `{ref}` (Python in {ref.module_path.name}); task code runs only "
            "with --trust-task-code (trust_task_code=True in Python)"
        )
    path = ref.module_path.resolve()
    if not path.is_file():
        raise HarnessError(f"{ref.yaml_file}: key {key!r}: `{ref}` names {path}, which does not exist; add the file or fix the name")
    module = _import(path, ref, key)
    if ran is not None:
        ran[str(path)] = file_sha256(path)
    function = getattr(module, ref.function_name, None)
    if function is None:
        raise HarnessError(f"{ref.yaml_file}: key {key!r}: {path.name} has no {ref.function_name!r}; fix the name")
    return function


def _import(path: Path, ref: FunctionRef, key: str) -> Any:
    mtime = path.stat().st_mtime_ns
    hit = _MODULES.get(path)
    if hit and hit[0] == mtime:
        return hit[1]
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HarnessError(f"{ref.yaml_file}: key {key!r}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Sibling imports (`from utils import x`, `from . import y` in lm-eval's task folders) resolve
    # as they do under lm-evaluation-harness: register the module before running it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - task code failing to import is the user's to fix
        sys.modules.pop(name, None)
        raise HarnessError(f"{ref.yaml_file}: key {key!r}: importing {path} failed ({type(err).__name__}: {err})") from None
    _MODULES[path] = (mtime, module)
    return module


def _module_name(path: Path) -> str:
    """lm-evaluation-harness's module names: `lm_eval.tasks.<folder>.utils` inside its tree,
    else the file's path without the suffix."""
    text = path.as_posix()
    marker = "/lm_eval/tasks/"
    if marker in text:
        return "lm_eval.tasks." + text[text.find(marker) + len(marker):].removesuffix(".py").replace("/", ".")
    return str(path.with_suffix(""))
