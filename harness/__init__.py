"""An evaluation and benchmarking harness for language models.

    import harness
    results = harness.evaluate(["smollm2-135m"], ["core"])
"""

from harness.errors import HarnessError
from harness.runner import RunOptions, evaluate

__version__ = "0.1.0"


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


__all__ = ["HarnessError", "RunOptions", "evaluate", "load_model", "load_task", "__version__"]
