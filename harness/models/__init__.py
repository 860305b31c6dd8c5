"""Model backends, chosen by a spec prefix: `hf:NAME` (default), `scratch:NAME`, `api:URL`, ..."""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import HarnessError
from harness.models.base import LanguageModel

# prefix -> "module:Class"; imported only when used, so `harness tasks` never loads torch models.
BACKENDS: dict[str, str] = {
    "hf": "harness.models.hf:HFLanguageModel",
    "scratch": "harness.models.scratch:ScratchLanguageModel",
    "api": "harness.models.api:APILanguageModel",
    "llamacpp": "harness.models.llamacpp:LlamaCppLanguageModel",
}
DEFAULT_BACKEND = "hf"


def split_spec(spec: str) -> tuple[str, str]:
    """'scratch:smollm2-135m' -> ('scratch', 'smollm2-135m'); no known prefix -> the default backend."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in BACKENDS:
        return prefix, rest
    return DEFAULT_BACKEND, spec


def load_model(spec: str, **options: Any) -> LanguageModel:
    """Load a model from a spec such as `smollm2-135m`, `hf:/path/to/dir` or `scratch:model.gguf`."""
    backend, name = split_spec(spec)
    if not name:
        raise HarnessError(f"model spec {spec!r} names no model after the backend prefix")
    module_name, _, class_name = BACKENDS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise HarnessError(f"backend {backend!r} is not available in this version") from None
        raise HarnessError(
            f"backend {backend!r} needs the package {err.name!r}; install it with pip"
        ) from None
    cls = getattr(module, class_name)
    accepted = getattr(cls, "accepted_options", None)
    if accepted is not None:
        options = {k: v for k, v in options.items() if k in accepted}
    return cls(name, **options)
