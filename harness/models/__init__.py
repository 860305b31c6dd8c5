"""Model backends, chosen by a spec prefix: `hf:NAME` (default), `scratch:NAME`, `api:URL`, ...

Backends are registered by prefix: the built-ins below, anything decorated with
`register_backend`, and other packages' `harness.backends` entry points (harness/plugins.py).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

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
# Run-wide settings the runner hands every backend; one that a backend does not take (dtype for
# api:, trust_remote_code for scratch:) is dropped, any other unknown option is an error.
COMMON_OPTIONS = frozenset({"dtype", "device", "batch_size", "trust_remote_code"})
_CLASSES: dict[str, type] = {}  # registered in this process (no import needed)
M = TypeVar("M", bound=type)


def register_backend(prefix: str) -> Callable[[M], M]:
    """Class decorator: specs `PREFIX:NAME` load `cls(NAME, **options)`. The class may declare
    `accepted_options` (a set of option names); any other option is then rejected."""
    if not prefix.isidentifier():
        raise ValueError(f"backend prefix {prefix!r} must be an identifier")

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, LanguageModel)):
            raise TypeError(f"register_backend({prefix!r}) needs a LanguageModel subclass, got {cls!r}")
        BACKENDS[prefix] = f"{cls.__module__}:{cls.__qualname__}"
        _CLASSES[prefix] = cls
        return cls

    return decorate


def split_spec(spec: str) -> tuple[str, str]:
    """'scratch:smollm2-135m' -> ('scratch', 'smollm2-135m'); no known prefix -> the default backend."""
    from harness.plugins import load_plugins

    load_plugins("backends")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in BACKENDS:
        return prefix, rest
    return DEFAULT_BACKEND, spec


def backend_class(backend: str) -> type:
    """The class registered for a backend prefix, imported on first use."""
    if backend in _CLASSES:
        return _CLASSES[backend]
    module_name, _, class_name = BACKENDS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise HarnessError(f"backend {backend!r} is not available in this version") from None
        raise HarnessError(
            f"backend {backend!r} needs the package {err.name!r}; install it with pip"
        ) from None
    cls = module
    for part in class_name.split("."):
        cls = getattr(cls, part)
    _CLASSES[backend] = cls
    return cls


def load_model(spec: str, **options: Any) -> LanguageModel:
    """Load a model from a spec such as `smollm2-135m`, `hf:/path/to/dir` or `scratch:model.gguf`.

    Options a backend does not take are an error listing the ones it does (run-wide settings in
    COMMON_OPTIONS excepted: a backend without them ignores them)."""
    backend, name = split_spec(spec)
    if not name:
        raise HarnessError(f"model spec {spec!r} names no model after the backend prefix")
    cls = backend_class(backend)
    accepted = getattr(cls, "accepted_options", None)
    if accepted is not None:
        unknown = sorted(k for k in options if k not in accepted and k not in COMMON_OPTIONS)
        if unknown:
            near = difflib.get_close_matches(unknown[0], sorted(accepted), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise HarnessError(f"backend {backend!r} has no option {unknown[0]!r}{hint}; "
                               f"its options: {', '.join(sorted(accepted))}")
        options = {k: v for k, v in options.items() if k in accepted}
    return cls(name, **options)
