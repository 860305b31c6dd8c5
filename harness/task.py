"""Task: documents -> requests -> per-sample records, driven by a validated TaskConfig."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.config import TaskConfig
from harness.data import Doc, docs_hash, load_split
from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample, get_metric
from harness.prompts import chat_messages, render_value, sample_fewshot, template_hash
from harness.requests import GenerateRequest

ChatFormatter = Callable[[list[dict[str, str]]], str]


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


class Task:
    """A task ready to run: its config, documents and metrics."""

    def __init__(self, config: TaskConfig, *, data_dir: str | None = None):
        self.config = config
        self.data_dir = data_dir
        self._docs: list[Doc] | None = None
        self._fewshot: list[Doc] | None = None
        self.metrics: list[Metric] = [get_metric(m.metric, **m.options) for m in config.metric_list]

    @property
    def name(self) -> str:
        return self.config.task

    def _where(self, key: str) -> str:
        return f"{self.config.source_file}: {key}"

    # -- documents ------------------------------------------------------------------------------

    def docs(self) -> list[Doc]:
        if self._docs is None:
            c = self.config
            split = c.test_split or c.validation_split or c.train_split
            self._docs = load_split(c, split, data_dir=self.data_dir)
        return self._docs

    def limit(self, n: int) -> None:
        """Evaluate only the first n documents."""
        self._docs = self.docs()[:n]

    def fewshot_pool(self) -> list[Doc]:
        c = self.config
        if self._fewshot is None:
            split = c.fewshot_split or c.train_split or c.validation_split
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
        if self.config.output_type == "multiple_choice":
            choices = self.choices(doc)
            return choices[self.gold_index(doc, choices)]
        target = self.target(doc)
        return str(target[0] if isinstance(target, list) else target)

    def context(self, doc: Doc, index: int, chat: ChatFormatter | None) -> str:
        c = self.config
        shots = sample_fewshot(
            self.fewshot_pool() if c.num_fewshot else [], c.num_fewshot,
            seed=c.seed, exclude_id=doc.get("id"), doc_index=index,
        )
        pairs = [(self.text(s), self.shot_answer(s)) for s in shots]
        question = self.text(doc)
        if chat is not None:
            messages = chat_messages([(t, a.strip()) for t, a in pairs], question, system=c.description or None)
            return chat(messages)
        examples = "".join(t + c.target_delimiter + a + c.fewshot_delimiter for t, a in pairs)
        return c.description + examples + question

    # -- requests -------------------------------------------------------------------------------

    def uses_chat(self, has_template: bool) -> bool:
        mode = self.config.chat_template
        if self.config.output_type == "loglikelihood_rolling":
            return False
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
            continuation = delimiter + (str(target).lstrip() if chat is not None else str(target))
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
