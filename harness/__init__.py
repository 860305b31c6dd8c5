"""An evaluation and benchmarking harness for language models.

    import harness
    results = harness.evaluate(["smollm2-135m"], ["core"])   # a harness.RunResults
    results.records()                                          # one dict per model x task x metric
    results.to_pandas()                                        # the same as a DataFrame (needs pandas)

Importing the package is cheap: the runner, the backends and torch load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.results import (GroupMetric, GroupResult, MetricResult, ModelEvaluation, ModelRecord, RunResults,
                             SampleRecord, TaskResult, load_results)

if TYPE_CHECKING:
    from harness.runner import RunOptions

__version__ = "0.1.0"


def evaluate(models: list[str] | str | None = None, tasks: list[str] | str | None = None,
             options: RunOptions | None = None, **kwargs: Any) -> RunResults:
    """Evaluate each model on each task (see `harness.runner.evaluate`); returns the typed results."""
    from harness.runner import evaluate as _evaluate

    return _evaluate(models, tasks, options, **kwargs)


# The contracts and the registration decorators, imported when first used (so that importing
# the package stays cheap): name -> module.
_LAZY = {
    "RunOptions": "harness.runner",
    "LanguageModel": "harness.models.base", "Task": "harness.task", "Metric": "harness.metrics.base",
    "Sample": "harness.metrics.base", "OutputAdapter": "harness.adapters", "Filter": "harness.filters",
    "register_backend": "harness.models", "register_metric": "harness.metrics.base",
    "register_filter": "harness.filters", "register_adapter": "harness.adapters",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def load_task(name: str, include_paths: list[str] | None = None, *, trust_task_code: bool = False,
              data_dir: str | None = None):
    """The Task for a name (or YAML path), ready to build requests; `trust_task_code` lets its
    `!function` code run (lm-evaluation-harness task files)."""
    from harness.registry import TaskRegistry
    from harness.task import Task

    (config,) = TaskRegistry(include_paths, trust_task_code=trust_task_code).select([name])[:1] or [None]
    return Task(config, data_dir=data_dir)


def load_model(spec: str, **options):
    """A LanguageModel from a spec such as `smollm2-135m` or `scratch:model.gguf`."""
    from harness.models import load_model as _load

    return _load(spec, **options)


__all__ = ["GroupMetric", "GroupResult", "HarnessError", "MetricResult", "ModelEvaluation", "ModelRecord",
           "RunResults", "SampleRecord", "TaskResult", "evaluate", "load_model", "load_results",
           "load_task", "__version__", *_LAZY]
