"""loglikelihood: log P(target | prompt) of one continuation (last-word and gold-response tasks)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from harness.adapters import register_adapter
from harness.adapters.base import AnswerHook, ChatFormatter, Instance, OutputAdapter, TokenCounter, answer_hook
from harness.metrics.base import Sample

if TYPE_CHECKING:
    from harness.data import Doc
    from harness.models.base import LanguageModel
    from harness.task import Task


def count_words(text: str) -> int:
    """lm-evaluation-harness's word count, on the continuation without its leading delimiter:
    `" Paris"` is one word, with or without the chat template."""
    return len(re.split(r"\s+", text.strip()))


class ContinuationAdapter(OutputAdapter):
    """Shared by the output types that score continuations with the `loglikelihood` method."""

    method = "loglikelihood"

    def delimiter(self, task: Task, chat: ChatFormatter | None) -> str:
        # In a chat the continuation starts the assistant's turn: no separator before it.
        return "" if chat is not None else task.config.target_delimiter

    def payload(self, request: Any, rolling: dict[str, Any]) -> Any:
        return list(request)

    def length(self, request: Any) -> int:
        return len(request[0]) + len(request[1])

    def share_key(self, request: Any) -> str | None:
        return request[0]

    def call(self, model: LanguageModel, requests: list[Any], rolling: dict[str, Any],
             on_answer: AnswerHook | None = None) -> list[Any]:
        return model.loglikelihood(requests, **answer_hook(model.loglikelihood, on_answer))

    def count_tokens(self, counter: TokenCounter, requests: list[Any], results: list[Any]) -> int:
        return counter([c + x for c, x in requests])


@register_adapter
class LoglikelihoodAdapter(ContinuationAdapter):
    """One request per document: (prompt, delimiter + target)."""

    output_type = "loglikelihood"
    default_metrics = ("perplexity", "acc")
    primary_preference = ("acc",)
    # the continuation's token perplexity: its tokens are the tokenizer's
    tokenizer_dependent = frozenset({"token_perplexity", "perplexity"})

    def instance(self, task: Task, doc: Doc, index: int, chat: ChatFormatter | None) -> Instance:
        context = task.context(doc, index, chat)
        target = task.target(doc)
        # lm-evaluation-harness scores doc_to_target as it is here: no target_delimiter
        continuation = str(target).lstrip() if chat is not None else str(target)
        return Instance(task.doc_id(doc, index), index, self, [(context, continuation)], context, target,
                        scored_text=continuation, n_words=count_words(continuation))

    def sample(self, task: Task, instance: Instance, response: Any) -> Sample:
        s = self.new_sample(task, instance)
        s.loglikelihoods = [(float(lp), bool(g)) for lp, g in response]
        return s
