"""Metric contract and registry: per-sample statistics first, aggregation second.

A metric turns each sample into a JSON-able statistic (a score, or sufficient statistics for a
corpus-level metric such as BLEU or perplexity) and aggregates a list of statistics into one
number. Bootstrap confidence intervals resample the statistics (harness/metrics/stats.py), so a
corpus metric is never averaged over sentences.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.errors import HarnessError

OUTPUT_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until", "multiple_choice")


@dataclass
class Sample:
    """What a metric sees of one document after the model answered."""

    doc_id: str
    output_type: str
    target: Any = None  # references (str or list[str]) or the gold choice index
    prediction: str | None = None  # generate_until
    loglikelihoods: list[tuple[float, bool]] | None = None  # per continuation/choice
    choices: list[str] | None = None  # multiple_choice
    text: str | None = None  # the scored text (rolling) or the scored continuation (loglikelihood)
    n_tokens: int | None = None  # tokens scored (rolling)
    n_words: int | None = None  # words normalizing word_perplexity (None: lm-eval's count of `text`)
    context: str | None = None  # the prompt
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        if isinstance(self.target, list):
            return [str(t) for t in self.target]
        return [] if self.target is None else [str(self.target)]


class Metric(ABC):
    """One metric. Subclasses set `name`, `output_types`, `higher_is_better` and `options`."""

    name: ClassVar[str]
    output_types: ClassVar[frozenset[str]] = frozenset(OUTPUT_TYPES)
    higher_is_better: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {}  # option name -> default
    needs_model: ClassVar[bool] = False  # e.g. a judge: the runner supplies the model

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise HarnessError(f"metric {self.name!r} has no option {unknown[0]!r} (options: {allowed})")
        self.config = {**self.options, **options}

    @abstractmethod
    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        """One JSON-able statistic per sample."""

    def aggregate(self, stats: Sequence[Any]) -> float:
        """The metric's value over these statistics (default: their mean)."""
        return sum(float(s) for s in stats) / len(stats) if stats else float("nan")

    def sample_score(self, stat: Any) -> float | None:
        """A per-sample number for logs and paired tests (default: the statistic itself)."""
        return float(stat) if isinstance(stat, (int, float)) else None

    @property
    def corpus_level(self) -> bool:
        """True when the aggregate is not the mean of per-sample scores."""
        return type(self).aggregate is not Metric.aggregate

    def signature(self) -> dict[str, Any]:
        """What a reader needs to reproduce the number: options and library versions."""
        return {"options": self.config}


_REGISTRY: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric available by name in task files and the CLI.

    Another package registers its metrics the same way, in a module it names under the
    `harness.metrics` entry-point group (loaded the first time a metric is looked up)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"metric {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


_loaded = False


def _load_builtin() -> None:
    """The built-in metrics, then those other packages add (entry-point group `harness.metrics`)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in ("perplexity", "choice", "overlap", "dialogue", "judge"):
        try:
            importlib.import_module(f"harness.metrics.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"harness.metrics.{module}":
                raise
    from harness.plugins import load_plugins

    load_plugins("metrics")


def metric_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def metric_class(name: str) -> type[Metric]:
    _load_builtin()
    if name not in _REGISTRY:
        raise HarnessError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_metric(name: str, **options: Any) -> Metric:
    """An instance of the metric `name` with its options checked."""
    return metric_class(name)(**options)
