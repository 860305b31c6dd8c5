"""Output-type adapters: one module per output type, found by name in a registry.

Another output type registers itself the same way the built-in ones do::

    from harness.adapters import register_adapter
    from harness.adapters.generate_until import GenerateUntilAdapter

    @register_adapter
    class ShortAnswer(GenerateUntilAdapter):
        output_type = "short_answer"
        default_metrics = ("exact_match",)

(or from another package, through the `harness.adapters` entry-point group).
"""

from __future__ import annotations


from harness.adapters.base import ChatFormatter, Instance, OutputAdapter
from harness.errors import HarnessError

__all__ = ["ChatFormatter", "Instance", "OutputAdapter", "adapter_names", "get_adapter", "register_adapter"]

_REGISTRY: dict[str, OutputAdapter] = {}
_BUILTIN = ("loglikelihood_rolling", "loglikelihood", "multiple_choice", "generate_until")


def register_adapter(cls: type[OutputAdapter]) -> type[OutputAdapter]:
    """Class decorator: make an output type available to task files (`output_type: NAME`)."""
    existing = _REGISTRY.get(cls.output_type)
    if existing is not None and type(existing) is not cls:
        raise ValueError(f"output type {cls.output_type!r} registered twice")
    _REGISTRY[cls.output_type] = cls()
    return cls


def _load() -> None:
    from harness.plugins import load_registry

    load_registry("adapters", "harness.adapters", _BUILTIN)


def adapter_names() -> list[str]:
    """Every registered output type, built-ins first."""
    _load()
    return list(_REGISTRY)


def get_adapter(output_type: str) -> OutputAdapter:
    """The adapter for an output type; HarnessError listing the known ones otherwise."""
    _load()
    adapter = _REGISTRY.get(output_type)
    if adapter is None:
        raise HarnessError(f"output_type {output_type!r} is not one of {', '.join(_REGISTRY)}")
    return adapter
