"""multiple_choice: one loglikelihood request per choice; the metrics compare them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.adapters import register_adapter
from harness.adapters.base import ChatFormatter, Instance
from harness.adapters.loglikelihood import ContinuationAdapter
from harness.errors import HarnessError
from harness.metrics.base import Sample

if TYPE_CHECKING:
    from harness.config import TaskConfig
    from harness.data import Doc
    from harness.task import Task


@register_adapter
class MultipleChoiceAdapter(ContinuationAdapter):
    """Requests (prompt, delimiter + choice) for every choice; the target is the gold index."""

    output_type = "multiple_choice"
    default_metrics = ("acc", "acc_norm")
    primary_preference = ("acc", "acc_norm")
    chance_metrics = frozenset({"acc", "acc_norm"})

    def check_config(self, config: TaskConfig, where: str) -> None:
        if config.doc_to_choice is None:
            raise HarnessError(f"{where}: output_type multiple_choice needs a 'doc_to_choice' key")

    def instance(self, task: Task, doc: Doc, index: int, chat: ChatFormatter | None) -> Instance:
        context = task.context(doc, index, chat)
        choices = task.choices(doc)
        gold = task.gold_index(doc, choices)
        delimiter = self.delimiter(task, chat)
        requests = [(context, delimiter + ch) for ch in choices]
        return Instance(task.doc_id(doc, index), index, self, requests, context, gold, choices=choices)

    def sample(self, task: Task, instance: Instance, response: Any) -> Sample:
        s = self.new_sample(task, instance)
        s.loglikelihoods = [(float(lp), bool(g)) for lp, g in response]
        s.choices = instance.choices
        return s
