"""The adapter contract: one output type's requests, backend method, cache payload and scoring.

A task keeps its data and templates; its adapter turns a rendered document into requests, says
which backend method answers them (and how each request is keyed and sized for length-sorted
batching), and turns the answers into the `Sample` the metrics read.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from harness.metrics.base import Sample

if TYPE_CHECKING:
    from harness.config import TaskConfig
    from harness.data import Doc
    from harness.models.base import LanguageModel
    from harness.task import Task

ChatFormatter = Callable[[list[dict[str, str]]], str]
TokenCounter = Callable[[list[str]], int]
AnswerHook = Callable[[int, Any], None]


def answer_hook(method: Callable[..., Any], on_answer: AnswerHook | None) -> dict[str, Any]:
    """`{"on_answer": hook}` for a backend method that hands over answers one by one, else {}."""
    if on_answer is not None and "on_answer" in inspect.signature(method).parameters:
        return {"on_answer": on_answer}
    return {}


@dataclass
class Instance:
    """One document's requests, answered by `adapter.method` on the backend."""

    doc_id: str
    index: int
    adapter: OutputAdapter
    requests: list[Any]
    context: str
    target: Any
    choices: list[str] | None = None
    scored_text: str | None = None
    n_words: int | None = None  # words that normalize word_perplexity (None: count scored_text)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The backend method (and cache key kind) of this instance's requests."""
        return self.adapter.method


class OutputAdapter(ABC):
    """One output type. Subclasses register themselves with `@register_adapter`."""

    output_type: ClassVar[str]
    method: ClassVar[str]  # loglikelihood | loglikelihood_rolling | generate_until
    default_metrics: ClassVar[tuple[str, ...]]
    # the first of these the task computes leads the leaderboard; else the first metric
    primary_preference: ClassVar[tuple[str, ...]] = ()
    supports_filters: ClassVar[bool] = False
    generates: ClassVar[bool] = False  # answers are generated text (generation_kwargs apply)
    supports_chat: ClassVar[bool] = True
    # what a reporter must know about this output type's metrics
    tokenizer_dependent: ClassVar[frozenset[str]] = frozenset({"token_perplexity"})  # not comparable across tokenizers
    # sets of metrics that are exact monotone transforms of one another (ranked once)
    exact_transforms: ClassVar[tuple[frozenset[str], ...]] = (frozenset({"bits_per_byte", "byte_perplexity"}),)
    chance_metrics: ClassVar[frozenset[str]] = frozenset()  # metrics with a guessing baseline of 1/len(choices)

    # -- configuration -----------------------------------------------------------------------

    def check_config(self, config: TaskConfig, where: str) -> None:
        """Raise HarnessError when the task file lacks a key this output type needs."""

    def primary_metric(self, metric_names: Sequence[str]) -> str | None:
        """The metric a leaderboard ranks this task by."""
        for name in self.primary_preference:
            if name in metric_names:
                return name
        comparable = [m for m in metric_names if m != "token_perplexity"]  # tokenizer-dependent
        return (comparable or list(metric_names) or [None])[0]

    def default_filter_list(self) -> list[dict[str, Any]]:
        """The pipelines a task without `filter_list` gets: "none" passes responses through."""
        return [{"name": "none", "filter": []}]

    def uses_chat(self, mode: str, has_template: bool, requested: bool | None = None) -> bool:
        """Whether prompts go through the model's chat template: the run's choice when it made one
        (`requested`), else the task key `chat_template`."""
        if not self.supports_chat:
            return False
        if requested is not None:
            return requested and has_template
        return mode == "always" or (mode == "auto" and has_template)

    # -- documents -> requests ---------------------------------------------------------------

    @abstractmethod
    def instance(self, task: Task, doc: Doc, index: int, chat: ChatFormatter | None) -> Instance:
        """The requests of one document."""

    # -- requests -> backend -----------------------------------------------------------------

    @abstractmethod
    def payload(self, request: Any, rolling: dict[str, Any]) -> Any:
        """The JSON-able content of a request that its cache key hashes."""

    @abstractmethod
    def length(self, request: Any) -> int:
        """A size for length-sorted batching (longest first)."""

    def share_key(self, request: Any) -> str | None:
        """What requests that can share computation have in common (the context before a
        scored continuation), or None. Requests are ordered by it, so that a question's choices
        and the documents behind one few-shot block land in the same backend call, where the
        backend computes their common prefix once."""
        return None

    @abstractmethod
    def call(self, model: LanguageModel, requests: list[Any], rolling: dict[str, Any],
             on_answer: AnswerHook | None = None) -> list[Any]:
        """Answer requests with the backend method (`on_answer(i, answer)` as each arrives, where
        the backend supports it)."""

    @abstractmethod
    def count_tokens(self, counter: TokenCounter, requests: list[Any], results: list[Any]) -> int:
        """Tokens the backend processed for these requests (throughput reporting)."""

    # -- responses -> sample -----------------------------------------------------------------

    @abstractmethod
    def sample(self, task: Task, instance: Instance, response: Any) -> Sample:
        """The sample the metrics score, from one document's (filtered) response."""

    def lm_eval_results(self, sample: Sample) -> list[Any]:
        """What lm-evaluation-harness's process_results receives as `results` for this sample:
        `[(loglikelihood, is_greedy), ...]` per continuation or choice."""
        return [tuple(x) for x in sample.loglikelihoods or []]

    def log_row(self, instance: Instance, responses: list[Any]) -> dict[str, Any]:
        """The raw answers as the samples file shows them."""
        row: dict[str, Any] = {"responses": responses}
        if instance.choices:
            row["choices"] = instance.choices
        return row

    def new_sample(self, task: Task, instance: Instance) -> Sample:
        c = task.config
        return Sample(doc_id=instance.doc_id, output_type=self.output_type, target=instance.target,
                      context=instance.context, language=c.language, text=instance.scored_text,
                      n_words=instance.n_words, extra=dict(instance.extra))
