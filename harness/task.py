"""Task: documents -> requests -> per-sample records, driven by a validated TaskConfig."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.config import TaskConfig
from harness.data import Doc
from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample, get_metric
from harness.prompts import render_value
from harness.requests import GenerateRequest
from harness.task_docs import ChatFormatter, TaskDocs

__all__ = ["ChatFormatter", "Instance", "Task"]


@dataclass
class Instance:
    """One document's requests: `kind` names the backend method that answers them."""

    doc_id: str
    index: int
    kind: str  # loglikelihood | loglikelihood_rolling | generate_until
    requests: list[Any]
    context: str
    target: Any
    choices: list[str] | None = None
    scored_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Task(TaskDocs):
    """A task ready to run: its config, documents and metrics."""

    # Run settings (lm-evaluation-harness's --system_instruction and --fewshot_as_multiturn).
    system_instruction: str = ""
    fewshot_as_multiturn: bool = True

    def __init__(self, config: TaskConfig, *, data_dir: str | None = None, allow_external_data: bool = False):
        super().__init__(config, data_dir=data_dir, allow_external_data=allow_external_data)
        try:
            self.metrics: list[Metric] = [get_metric(m.metric, **m.options) for m in config.metric_list]
        except HarnessError:
            self.check_scoring()  # task code that scores: say so rather than "unknown metric"
            raise

    # -- requests -------------------------------------------------------------------------------

    def uses_chat(self, has_template: bool, requested: bool | None = None) -> bool:
        """Whether prompts go through the model's chat template: the run's choice when made
        (--apply-chat-template / --no-chat-template), else the task file's chat_template."""
        mode = self.config.chat_template
        if self.config.output_type == "loglikelihood_rolling":
            return False
        if requested is not None:
            return requested and has_template
        return mode == "always" or (mode == "auto" and has_template)

    def build(self, docs: Sequence[Doc], chat: ChatFormatter | None) -> list[Instance]:
        """Every document's requests; `chat` renders messages when the chat template is used."""
        return [self._instance(doc, i, chat) for i, doc in enumerate(docs)]

    def _instance(self, doc: Doc, index: int, chat: ChatFormatter | None) -> Instance:
        c = self.config
        doc_id = self.doc_id(doc, index)
        delimiter = "" if chat is not None else c.target_delimiter
        if c.output_type == "loglikelihood_rolling":
            text = str(self.target(doc)) or self.text(doc)
            counted = text
            if c.perplexity_text:  # e.g. wikitext: score the detokenized page, count the original's words
                counted = str(render_value(c.perplexity_text, doc, where=self._where("perplexity_text")))
            return Instance(doc_id, index, c.output_type, [text], "", text, scored_text=counted)
        context = self.context(doc, index, chat)
        if c.output_type == "multiple_choice":
            choices = self.choices(doc)
            gold = self.gold_index(doc, choices)
            reqs = [(context, delimiter + ch) for ch in choices]
            return Instance(doc_id, index, "loglikelihood", reqs, context, gold, choices=choices)
        target = self.target(doc)
        if c.output_type == "loglikelihood":
            # lm-evaluation-harness scores doc_to_target as it is here: no target_delimiter
            continuation = str(target).lstrip() if chat is not None else str(target)
            return Instance(doc_id, index, "loglikelihood", [(context, continuation)], context, target, scored_text=continuation)
        g = c.generation_kwargs
        until = tuple(g.get("until", [c.fewshot_delimiter]))
        seed = zlib.crc32(f"{g.get('seed', c.seed)}:{doc_id}".encode()) & 0x7FFFFFFF
        request = GenerateRequest(
            prompt=context, until=until, max_gen_toks=int(g.get("max_gen_toks", 256)),
            temperature=float(g.get("temperature", 0.0)), do_sample=bool(g.get("do_sample", False)),
            top_p=float(g.get("top_p", 1.0)), top_k=int(g.get("top_k", 0)),
            repetition_penalty=float(g.get("repetition_penalty", 1.0)), seed=seed,
        )
        references = [str(t).strip() for t in target] if isinstance(target, list) else [str(target).strip()]
        return Instance(doc_id, index, "generate_until", [request], context, references,
                        extra={"question": self.text(doc)})

    # -- scoring --------------------------------------------------------------------------------

    def sample(self, instance: Instance, responses: list[Any]) -> Sample:
        c = self.config
        s = Sample(doc_id=instance.doc_id, output_type=c.output_type, target=instance.target,
                   context=instance.context, language=c.language, text=instance.scored_text,
                   extra=dict(instance.extra))
        if c.output_type == "loglikelihood_rolling":
            logprob, n_tokens = responses[0]
            s.loglikelihoods, s.n_tokens = [(logprob, True)], n_tokens
        elif c.output_type == "generate_until":
            s.prediction = responses[0]
        else:
            s.loglikelihoods = [(float(lp), bool(g)) for lp, g in responses]
            s.choices = instance.choices
        return s
