"""loglikelihood_rolling: the whole text's log-probability (perplexity tasks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.adapters import register_adapter
from harness.adapters.base import AnswerHook, ChatFormatter, Instance, OutputAdapter, TokenCounter, answer_hook
from harness.metrics.base import Sample
from harness.prompts import render_value

if TYPE_CHECKING:
    from harness.data import Doc
    from harness.models.base import LanguageModel
    from harness.task import Task


@register_adapter
class RollingAdapter(OutputAdapter):
    """One request per document: its text, scored in windows of the model's length (no prompt)."""

    output_type = "loglikelihood_rolling"
    method = "loglikelihood_rolling"
    default_metrics = ("word_perplexity", "byte_perplexity", "bits_per_byte")
    # comparable across tokenizers; bits_per_byte first, as the leaderboard (report/ranking.py)
    primary_preference = ("bits_per_byte", "word_perplexity", "byte_perplexity")
    supports_chat = False  # a raw text has no turns
    # all three are exp/log transforms of one corpus log-likelihood over fixed word and byte counts
    exact_transforms = (frozenset({"bits_per_byte", "byte_perplexity", "word_perplexity"}),)

    def instance(self, task: Task, doc: Doc, index: int, chat: ChatFormatter | None) -> Instance:
        c = task.config
        text = str(task.target(doc)) or task.text(doc)
        counted = text
        if c.perplexity_text:  # e.g. wikitext: score the detokenized page, count the original's words
            counted = str(render_value(c.perplexity_text, doc, where=task.where("perplexity_text")))
        return Instance(task.doc_id(doc, index), index, self, [text], "", text, scored_text=counted)

    def payload(self, request: Any, rolling: dict[str, Any]) -> Any:
        return [request, rolling.get("max_length"), rolling.get("stride")]

    def length(self, request: Any) -> int:
        return len(request)

    def call(self, model: LanguageModel, requests: list[Any], rolling: dict[str, Any],
             on_answer: AnswerHook | None = None) -> list[Any]:
        method = model.loglikelihood_rolling
        return method(requests, max_length=rolling.get("max_length"), stride=rolling.get("stride"),
                      **answer_hook(method, on_answer))

    def count_tokens(self, counter: TokenCounter, requests: list[Any], results: list[Any]) -> int:
        return sum(n for _, n in results)

    def lm_eval_results(self, sample: Sample) -> list[Any]:
        return [sample.loglikelihoods[0][0]] if sample.loglikelihoods else []  # the text's loglikelihood

    def sample(self, task: Task, instance: Instance, response: Any) -> Sample:
        (logprob, n_tokens), = response
        s = self.new_sample(task, instance)
        s.loglikelihoods, s.n_tokens = [(logprob, True)], n_tokens
        return s
