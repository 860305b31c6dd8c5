"""Task: a validated TaskConfig's documents and templates (task_docs.py); its output type's
adapter (harness/adapters/) turns them into requests and the answers into samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.adapters import ChatFormatter, Instance, OutputAdapter, get_adapter
from harness.config import MetricEntry, TaskConfig
from harness.data import Doc
from harness.errors import HarnessError
from harness.filters import FilterPipeline, build_pipelines
from harness.metrics.base import Metric, Sample, get_metric
from harness.metrics.task_code import task_code_metrics, uses_scoring_code
from harness.task_docs import TaskDocs

__all__ = ["ChatFormatter", "Instance", "Task"]


class Task(TaskDocs):
    """A task ready to run: its config, documents and metrics."""

    # Run settings (lm-evaluation-harness's --system_instruction and --fewshot_as_multiturn).
    system_instruction: str = ""
    fewshot_as_multiturn: bool = True

    def __init__(self, config: TaskConfig, *, data_dir: str | None = None, allow_external_data: bool = False):
        super().__init__(config, data_dir=data_dir, allow_external_data=allow_external_data)
        self.adapter: OutputAdapter = get_adapter(config.output_type)
        self.check_scoring()
        self.metrics: list[Metric] = self._metrics()

    def _metrics(self) -> list[Metric]:
        """metric_list's metrics; task code (process_results, `!function` metrics and
        aggregations) scores as lm-evaluation-harness does (harness/metrics/task_code.py)."""
        c = self.config

        def builtin(entry: MetricEntry) -> Metric:
            options = dict(entry.options)
            if entry.metric == "exact_match" and c.lm_eval_format:
                options.setdefault("strip", False)  # lm-evaluation-harness's exact_match trims nothing
            return get_metric(entry.metric, **options)

        if uses_scoring_code(c):
            return task_code_metrics(self, builtin)
        return [builtin(m) for m in c.metric_list]

    def where(self, key: str) -> str:
        """`file: key`, the start of an error message about one of the task's keys."""
        return self._where(key)

    # -- requests and scoring: the output type's adapter ---------------------------------------

    def uses_chat(self, has_template: bool, requested: bool | None = None) -> bool:
        """Whether prompts go through the model's chat template: the run's choice when made
        (--apply-chat-template / --no-chat-template), else the task file's chat_template."""
        return self.adapter.uses_chat(self.config.chat_template, has_template, requested)

    def build(self, docs: Sequence[Doc], chat: ChatFormatter | None) -> list[Instance]:
        """Every document's requests; `chat` renders messages when the chat template is used."""
        return [self.adapter.instance(self, doc, i, chat) for i, doc in enumerate(docs)]

    def filters(self) -> list[FilterPipeline]:
        """The answer pipelines (`filter_list`, else the output type's default), each scored."""
        return build_pipelines(self.config.filter_list or self.adapter.default_filter_list(),
                               lambda ref, key: self.function(ref, key))

    def sample(self, instance: Instance, response: Any) -> Sample:
        """The sample the metrics score, from one document's (filtered) response."""
        return self.adapter.sample(self, instance, response)
