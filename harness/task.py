"""Task: a validated TaskConfig's documents and templates; its output type's adapter
(harness/adapters/) turns them into requests and the answers into samples."""

from __future__ import annotations

<<<<<<< HEAD
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
=======
from collections.abc import Sequence
>>>>>>> 0f6a285 (One adapter per output type: requests, cache payload, length, backend method and sample record live in harness/adapters; Task keeps data and templates; filter pipelines between responses and scores)
from typing import Any

from harness.adapters import ChatFormatter, Instance, OutputAdapter, get_adapter
from harness.config import TaskConfig
from harness.data import Doc
from harness.errors import HarnessError
from harness.filters import FilterPipeline, build_pipelines
from harness.metrics.base import Metric, Sample, get_metric
<<<<<<< HEAD
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
=======
from harness.prompts import chat_messages, render_value, sample_fewshot, template_hash

__all__ = ["ChatFormatter", "Instance", "Task"]
>>>>>>> 0f6a285 (One adapter per output type: requests, cache payload, length, backend method and sample record live in harness/adapters; Task keeps data and templates; filter pipelines between responses and scores)


class Task(TaskDocs):
    """A task ready to run: its config, documents and metrics."""

<<<<<<< HEAD
    def __init__(self, config: TaskConfig, *, data_dir: str | None = None, allow_external_data: bool = False):
        super().__init__(config, data_dir=data_dir, allow_external_data=allow_external_data)
        try:
            self.metrics: list[Metric] = [get_metric(m.metric, **m.options) for m in config.metric_list]
        except HarnessError:
            self.check_scoring()  # task code that scores: say so rather than "unknown metric"
            raise
=======
    def __init__(self, config: TaskConfig, *, data_dir: str | None = None):
        self.config = config
        self.data_dir = data_dir
        self._docs: list[Doc] | None = None
        self._fewshot: list[Doc] | None = None
        self.adapter: OutputAdapter = get_adapter(config.output_type)
        self.metrics: list[Metric] = [get_metric(m.metric, **m.options) for m in config.metric_list]

    @property
    def name(self) -> str:
        return self.config.task

    def where(self, key: str) -> str:
        """`file: key`, the start of an error message about one of the task's keys."""
        return f"{self.config.source_file}: {key}"

    _where = where

    # -- documents ------------------------------------------------------------------------------

    def _eval_split(self) -> str | None:
        c = self.config
        return c.test_split or c.validation_split or c.train_split

    def _fewshot_split(self) -> str | None:
        c = self.config
        return c.fewshot_split or c.train_split or c.validation_split

    def docs(self) -> list[Doc]:
        if self._docs is None:
            self._docs = load_split(self.config, self._eval_split(), data_dir=self.data_dir)
        return self._docs

    def limit(self, n: int) -> None:
        """Evaluate only the first n documents."""
        self._docs = self.docs()[:n]

    def fewshot_pool(self) -> list[Doc]:
        c = self.config
        if self._fewshot is None:
            split = self._fewshot_split()
            if split is None:
                raise HarnessError(f"{self._where('num_fewshot')} is {c.num_fewshot} but no fewshot_split is set; add one")
            self._fewshot = load_split(c, split, data_dir=self.data_dir)
        return self._fewshot

    def doc_id(self, doc: Doc, index: int) -> str:
        return str(doc.get("id", doc.get("doc_id", index)))

    def data_hash(self, docs: Sequence[Doc]) -> str:
        return docs_hash(list(docs))

    def template_hash(self) -> str:
        c = self.config
        return template_hash(
            c.description, c.doc_to_text, str(c.doc_to_target), str(c.doc_to_choice),
            c.target_delimiter, c.fewshot_delimiter, str(c.num_fewshot), str(sorted(c.generation_kwargs.items())),
        )

    def validate(self) -> None:
        """Render the first document (templates, fields, gold index) before any model call."""
        docs = self.docs()
        self.build(docs[:1], chat=None)

    # -- rendering ------------------------------------------------------------------------------

    def text(self, doc: Doc) -> str:
        return str(render_value(self.config.doc_to_text, doc, where=self._where("doc_to_text")))

    def target(self, doc: Doc) -> Any:
        return render_value(self.config.doc_to_target, doc, where=self._where("doc_to_target"))

    def choices(self, doc: Doc) -> list[str]:
        value = render_value(self.config.doc_to_choice, doc, where=self._where("doc_to_choice"))
        if isinstance(value, str):
            raise HarnessError(
                f"{self._where('doc_to_choice')} rendered a string, not a list; write it as {{{{ field }}}} naming a list field"
            )
        if not isinstance(value, (list, tuple)) or not value:
            raise HarnessError(f"{self._where('doc_to_choice')} must give a non-empty list of choices")
        return [str(v) for v in value]

    def gold_index(self, doc: Doc, choices: list[str]) -> int:
        gold = self.target(doc)
        if isinstance(gold, str):
            gold = int(gold) if gold.strip().isdigit() else (choices.index(gold) if gold in choices else None)
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise HarnessError(
                f"{self._where('doc_to_target')} must give the gold choice's index (0..{len(choices) - 1}) or its text; got {gold!r}"
            )
        return gold

    def shot_answer(self, doc: Doc) -> str:
        return self.adapter.shot_answer(self, doc)

    def context(self, doc: Doc, index: int, chat: ChatFormatter | None) -> str:
        c = self.config
        pool = self.fewshot_pool() if c.num_fewshot else []
        if pool and self._fewshot_split() == self._eval_split():
            pool = pool[:index] + pool[index + 1 :]  # the document itself, even when it has no id
        shots = sample_fewshot(pool, c.num_fewshot, seed=c.seed, exclude_id=doc.get("id"), doc_index=index)
        pairs = [(self.text(s), self.shot_answer(s)) for s in shots]
        question = self.text(doc)
        if chat is not None:
            messages = chat_messages([(t, a.strip()) for t, a in pairs], question, system=c.description or None)
            return chat(messages)
        examples = "".join(t + c.target_delimiter + a + c.fewshot_delimiter for t, a in pairs)
        return c.description + examples + question
>>>>>>> 0f6a285 (One adapter per output type: requests, cache payload, length, backend method and sample record live in harness/adapters; Task keeps data and templates; filter pipelines between responses and scores)

    # -- requests and scoring: the output type's adapter ---------------------------------------

    def uses_chat(self, has_template: bool) -> bool:
        return self.adapter.uses_chat(self.config.chat_template, has_template)

    def build(self, docs: Sequence[Doc], chat: ChatFormatter | None) -> list[Instance]:
        """Every document's requests; `chat` renders messages when the chat template is used."""
        return [self.adapter.instance(self, doc, i, chat) for i, doc in enumerate(docs)]

<<<<<<< HEAD
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
=======
    def filters(self) -> list[FilterPipeline]:
        """The answer pipelines (`filter_list`, else the output type's default), each scored."""
        return build_pipelines(self.config.filter_list or self.adapter.default_filter_list())
>>>>>>> 0f6a285 (One adapter per output type: requests, cache payload, length, backend method and sample record live in harness/adapters; Task keeps data and templates; filter pipelines between responses and scores)

    def sample(self, instance: Instance, response: Any) -> Sample:
        """The sample the metrics score, from one document's (filtered) response."""
        return self.adapter.sample(self, instance, response)
