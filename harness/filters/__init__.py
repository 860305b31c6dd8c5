"""Answer filters: named pipelines applied to a task's responses before the metrics score them.

lm-evaluation-harness's `filter_list` key, with its built-in filters and their exact semantics::

    filter_list:
      - name: strict-match
        filter:
          - function: regex
            regex_pattern: "#### (\\-?[0-9\\.\\,]+)"
          - function: take_first

Each filter maps the per-document response lists (several with `repeats`) to new per-document
values; the pipeline's output for a document is what the metrics score, once per pipeline. A
filter of your own registers by name::

    from harness.filters import Filter, register_filter

    @register_filter("strip_dollars")
    class StripDollars(Filter):
        def apply(self, resps, docs):
            return [[r.replace("$", "") for r in rs] for rs in resps]

(or from another package, through the `harness.filters` entry-point group).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

__all__ = ["Filter", "FilterPipeline", "build_pipelines", "check_filter_list", "filter_names", "get_filter", "register_filter"]


class Filter(ABC):
    """One step of a pipeline. Keyword options from the task file go to `__init__`."""

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"unexpected option {sorted(options)[0]!r}")

    @abstractmethod
    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        """New per-document values for these per-document responses, in the same order."""


_REGISTRY: dict[str, type[Filter]] = {}
_BUILTIN = ("selection", "extraction", "transformation")


def register_filter(name: str) -> Callable[[type[Filter]], type[Filter]]:
    """Class decorator: make a filter available to task files as `function: NAME`."""

    def add(cls: type[Filter]) -> type[Filter]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"filter {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return add


def _load() -> None:
    from harness.plugins import load_registry

    load_registry("filters", "harness.filters", _BUILTIN)


def filter_names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_filter(name: str, **options: Any) -> Filter:
    """An instance of the filter `name`; HarnessError naming the known filters otherwise."""
    _load()
    if name not in _REGISTRY:
        raise HarnessError(f"unknown filter {name!r}; known filters: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**options)
    except (TypeError, ValueError, KeyError) as err:
        raise HarnessError(f"filter {name!r}: bad options {options!r} ({err})") from None


@dataclass
class FilterPipeline:
    """A named sequence of filters (one `filter_list` entry)."""

    name: str
    steps: list[Filter]

    def apply(self, resps: Sequence[Sequence[Any]], docs: Sequence[dict[str, Any]]) -> list[Any]:
        values: list[Any] = [list(r) for r in resps]
        for step in self.steps:
            values = list(step.apply(values, docs))
        if len(values) != len(resps):
            raise HarnessError(f"filter pipeline {self.name!r} returned {len(values)} values for {len(resps)} documents")
        return values


def check_filter_list(where: str, value: Any) -> list[dict[str, Any]]:
    """Validate a task file's `filter_list` (names, functions, options) and return it."""
    shape = "a list of {name: NAME, filter: [{function: FILTER, ...options}]}"
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{where}: key 'filter_list' must be {shape}")
    names = set()
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("filter"), list):
            raise HarnessError(f"{where}: filter_list[{i}] must be a mapping with 'name' and a 'filter' list ({shape})")
        if entry["name"] in names:
            raise HarnessError(f"{where}: filter_list has two pipelines named {entry['name']!r}; names must differ")
        names.add(entry["name"])
        unknown = sorted(set(entry) - {"name", "filter"})
        if unknown:
            raise HarnessError(f"{where}: filter_list[{i}] has unknown key {unknown[0]!r} (keys: name, filter)")
        for j, step in enumerate(entry["filter"]):
            if not isinstance(step, dict) or "function" not in step:
                raise HarnessError(f"{where}: filter_list[{i}].filter[{j}] must be a mapping with a 'function' name")
            if not isinstance(step["function"], str):
                continue  # task code (`!function`): checked by the config, imported when the task runs
            try:
                _step(step)
            except HarnessError as err:
                raise HarnessError(f"{where}: filter_list[{i}] ({entry['name']}): {err}") from None
    return value


def _step(step: dict[str, Any], resolve: Resolver | None = None, key: str = "filter_list") -> Filter:
    options = {k: v for k, v in step.items() if k != "function"}
    if not isinstance(step["function"], str):
        if resolve is None:
            raise HarnessError(f"{key}: `{step['function']}` is task code; it runs only with --trust-task-code")
        return CodeFilter(resolve(step["function"], key), options, str(step["function"]))
    return get_filter(step["function"], **options)


Resolver = Callable[[Any, str], Callable[..., Any]]


class CodeFilter(Filter):
    """A filter from task code (`function: !function utils.MyFilter`): as lm-evaluation-harness,
    a new `MyFilter(**options)` per application, then its `apply(resps, docs)`."""

    def __init__(self, factory: Callable[..., Any], options: dict[str, Any], label: str):
        self.factory, self.options, self.label = factory, options, label

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        try:
            return list(self.factory(**self.options).apply(resps, docs))
        except HarnessError:
            raise
        except Exception as err:  # noqa: BLE001 - task code failing is the task's to fix
            raise HarnessError(f"filter `{self.label}` failed ({type(err).__name__}: {err})") from None


def build_pipelines(filter_list: list[dict[str, Any]], resolve: Resolver | None = None) -> list[FilterPipeline]:
    """The pipelines of a validated `filter_list`; `resolve(ref, key)` loads task-code filters."""
    return [FilterPipeline(entry["name"], [_step(s, resolve, f"filter_list[{i}].filter[{j}].function")
                                           for j, s in enumerate(entry["filter"])])
            for i, entry in enumerate(filter_list)]
