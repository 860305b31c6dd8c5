"""A task's documents, few-shot examples and prompt contexts, as lm-evaluation-harness builds them.

Each method follows lm-evaluation-harness 0.4.13's ConfigurableTask (api/task.py) key for key:
splits and their fallbacks, `process_docs`, `fewshot_config` (sampler, split, inline samples and
its own templates and delimiters), `description`, `target_delimiter`, `gen_prefix` and the forms of
`doc_to_text` / `doc_to_target` / `doc_to_choice`, so the rendered context for a document is
byte-identical to lm-evaluation-harness's for the same seed (tested against lm-eval itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from harness.config import FewshotConfig, TaskConfig
from harness.data import Doc, docs_hash, load_split
from harness.errors import HarnessError
from harness.prompts import FewshotSampler, apply_template, chat_messages, literal, template_hash
from harness.task_code import resolve
from harness.taskfile import FunctionRef

ChatFormatter = Callable[[list[dict[str, str]]], str]


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str = " ") -> str:
    """lm-evaluation-harness's api/utils.maybe_delimit."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix or ""
    return prefix + delimiter + suffix if not (prefix[-1].isspace() or suffix[0].isspace()) else prefix + suffix


def requires_delimiter(prefix: str, suffix: str) -> bool:
    return prefix != "" and not (prefix[-1].isspace() or suffix[0].isspace())


class TaskDocs:
    """Documents and contexts of one task (the request side lives in `Task`)."""

    def __init__(self, config: TaskConfig, *, data_dir: str | None = None, allow_external_data: bool = False):
        self.config = config
        self.data_dir = data_dir
        self.allow_external_data = allow_external_data
        self.code_files: dict[str, str] = {}  # task code that ran: file -> sha256
        self._splits: dict[str, list[Doc]] = {}
        self._docs: list[Doc] | None = None
        self._fewshot: list[Doc] | None = None
        self._sampler: FewshotSampler | None = None
        self._shots: list[list[Doc]] = []
        self._functions: dict[str, Callable[..., Any]] = {}
        self._custom: Any = None

    @property
    def name(self) -> str:
        return self.config.task

    def _where(self, key: str) -> str:
        return f"{self.config.source_file}: {key}"

    def function(self, ref: FunctionRef, key: str) -> Callable[..., Any]:
        """The task code behind a `!function` (only with --trust-task-code); recorded as run."""
        if ref.qualname + key not in self._functions:
            self._functions[ref.qualname + key] = resolve(ref, trusted=self.config.trust_task_code, key=key, ran=self.code_files)
        return self._functions[ref.qualname + key]

    # -- documents ------------------------------------------------------------------------------

    def _split(self, split: str, process: FunctionRef | None, key: str = "process_docs") -> list[Doc]:
        cache_key = f"{split}\\0{process.qualname if process else ''}"
        if cache_key not in self._splits:
            c = self.config
            if c.custom_dataset is not None:
                if self._custom is None:
                    self._custom = self.function(c.custom_dataset, "custom_dataset")(**c.metadata, **c.dataset_kwargs)
                docs = self._custom[split]
            else:
                docs = load_split(c, split, data_dir=self.data_dir, allow_external=self.allow_external_data)
            if process is not None:
                docs = self._process(docs, process, key)
            self._splits[cache_key] = [dict(d) for d in docs]
        return self._splits[cache_key]

    def _process(self, docs: Any, ref: FunctionRef, key: str) -> Any:
        """process_docs takes a datasets.Dataset under lm-evaluation-harness: give it one."""
        fn = self.function(ref, key)
        if isinstance(docs, list):
            import datasets

            docs = datasets.Dataset.from_list(docs)
        try:
            return fn(docs)
        except HarnessError:
            raise
        except Exception as err:  # noqa: BLE001 - task code failing is the task's to fix
            raise HarnessError(f"{self._where(key)}: `{ref}` failed ({type(err).__name__}: {err})") from None

    def docs(self) -> list[Doc]:
        """The evaluated documents: test split, else validation (lm-evaluation-harness's eval_docs)."""
        if self._docs is None:
            c = self.config
            split = c.test_split or c.validation_split
            if split is None:
                raise HarnessError(f"{c.source_file}: neither test_split nor validation_split is set; add one")
            self._docs = self._split(split, c.process_docs)
        return self._docs

    def limit(self, n: int) -> None:
        """Evaluate only the first n documents."""
        self._docs = self.docs()[:n]

    def fewshot_settings(self) -> FewshotConfig:
        """fewshot_config with lm-evaluation-harness's inheritance from the task's own keys."""
        c = self.config
        own = c.fewshot_config or FewshotConfig()
        inherit = {
            "split": c.fewshot_split, "process_docs": c.process_docs, "fewshot_delimiter": c.fewshot_delimiter,
            "target_delimiter": c.target_delimiter, "gen_prefix": c.gen_prefix, "doc_to_text": c.doc_to_text,
            "doc_to_choice": c.doc_to_choice, "doc_to_target": c.doc_to_target,
        }
        values = {k: getattr(own, k) for k in own.__dataclass_fields__}
        for key, value in inherit.items():
            if values[key] is None:
                values[key] = value
        if c.fewshot_config is None:
            values["sampler"] = "default"
        return FewshotConfig(**values)

    def fewshot_pool(self) -> list[Doc]:
        """lm-evaluation-harness's fewshot_docs: fewshot split, else inline samples, else the
        training split, else validation, else test."""
        if self._fewshot is None:
            c, fc = self.config, self.fewshot_settings()
            if fc.split is not None:
                self._fewshot = self._split(fc.split, fc.process_docs, "fewshot_config.process_docs")
            elif c.fewshot_config is not None and fc.samples is not None:
                samples = fc.samples
                if isinstance(samples, FunctionRef):
                    samples = self.function(samples, "fewshot_config.samples")()
                self._fewshot = [dict(d) for d in samples]
            else:
                split = c.training_split or c.validation_split or c.test_split
                if split is None:
                    raise HarnessError(f"{self._where('num_fewshot')} is {c.num_fewshot} but the task has no split to draw examples from; add fewshot_split")
                self._fewshot = self._split(split, c.process_docs)
            if fc.fewshot_indices:
                self._fewshot = [self._fewshot[i] for i in fc.fewshot_indices]
        return self._fewshot

    def shots(self, index: int) -> list[Doc]:
        """The few-shot documents of evaluated document `index`. The default sampler draws from one
        seeded generator in document order, as lm-evaluation-harness does, so shots are drawn for
        every earlier document first."""
        c = self.config
        if c.num_fewshot <= 0:
            return []
        if self._sampler is None:
            self._sampler = FewshotSampler(self.fewshot_pool(), sampler=self.fewshot_settings().sampler, seed=c.seed)
        fc = self.fewshot_settings()
        docs = self.docs()
        while len(self._shots) <= index:
            doc = docs[len(self._shots)]
            eval_doc = doc if fc.split == c.test_split else None
            try:
                self._shots.append(self._sampler.sample(c.num_fewshot, eval_doc))
            except HarnessError as err:
                raise HarnessError(f"{self._where('num_fewshot')}: {err}") from None
        return self._shots[index]

    def doc_id(self, doc: Doc, index: int) -> str:
        return str(doc.get("id", doc.get("doc_id", index)))

    def data_hash(self, docs: Sequence[Doc]) -> str:
        return docs_hash(list(docs))

    def template_hash(self) -> str:
        c = self.config
        fc = c.fewshot_config
        return template_hash(
            str(c.description), str(c.doc_to_text), str(c.doc_to_target), str(c.doc_to_choice),
            c.target_delimiter, c.fewshot_delimiter, str(c.num_fewshot), str(sorted(c.generation_kwargs.items())),
            str(c.gen_prefix), repr(fc) if fc else "", str(c.process_docs), *sorted(self.code_files.values()),
        )

    def check_scoring(self) -> None:
        """Refuse what this installation would score differently from the task file."""
        if self.config.filter_list:
            import importlib.util

            if importlib.util.find_spec("harness.filters") is None:
                raise HarnessError(f"{self._where('filter_list')}: filter pipelines are not available in this installation")

    def validate(self) -> None:
        """Render the first document (templates, fields, gold index) before any model call."""
        self.check_scoring()
        docs = self.docs()
        self.build(docs[:1], chat=None)  # type: ignore[attr-defined]

    # -- rendering (lm-evaluation-harness's doc_to_* methods) -------------------------------------

    def _value(self, doc: Doc, spec: Any, key: str) -> Any:
        if isinstance(spec, FunctionRef):
            try:
                return self.function(spec, key)(doc)
            except HarnessError:
                raise
            except Exception as err:  # noqa: BLE001
                raise HarnessError(f"{self._where(key)}: `{spec}` failed ({type(err).__name__}: {err})") from None
        return spec

    def text(self, doc: Doc, spec: Any = None, key: str = "doc_to_text") -> Any:
        spec = self.config.doc_to_text if spec is None else spec
        if isinstance(spec, FunctionRef):
            return self._value(doc, spec, key)
        if isinstance(spec, int):
            return spec
        if spec in doc:
            return doc[spec]
        text = apply_template(spec, doc, where=self._where(key))
        if text.isdigit() and self.config.doc_to_choice is not None:
            return int(text)  # lm-evaluation-harness: a choice index (multiple inputs)
        return text

    def target(self, doc: Doc, spec: Any = None, key: str = "doc_to_target") -> Any:
        spec = self.config.doc_to_target if spec is None else spec
        if isinstance(spec, FunctionRef):
            return self._value(doc, spec, key)
        if isinstance(spec, (int, list)):
            return spec
        if spec in doc:
            return doc[spec]
        text = apply_template(spec, doc, where=self._where(key))
        if text.isdigit() and self.config.doc_to_choice is not None:
            return int(text)
        if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
            try:
                return literal(text, where=self._where(key))
            except HarnessError:
                return text
        return text

    def choices(self, doc: Doc, spec: Any = None, key: str = "doc_to_choice") -> list[str]:
        original = self.config.doc_to_choice if spec is None else spec
        value = self._value(doc, original, key)
        if isinstance(value, dict):
            value = list(value.values())
        elif isinstance(value, str) and not isinstance(original, FunctionRef):
            value = doc[value] if value in doc else literal(apply_template(value, doc, where=self._where(key)), where=self._where(key))
        if not isinstance(value, (list, tuple)) or not value:
            raise HarnessError(f"{self._where(key)} must give a non-empty list of choices, not {str(value)[:60]!r}")
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

    def prefix(self, doc: Doc) -> str | None:
        """gen_prefix: a field name or a template (lm-evaluation-harness's doc_to_prefix)."""
        return self._resolve_field(doc, self.config.gen_prefix, "gen_prefix")

    def _resolve_field(self, doc: Doc, spec: str | None, key: str) -> str | None:
        if not spec:
            return None
        return doc[spec] if spec in doc else apply_template(spec, doc, where=self._where(key))

    def _question(self, doc: Doc) -> str:
        q = self.text(doc)
        if isinstance(q, int):
            raise HarnessError(
                f"{self._where('doc_to_text')} gives a choice index (one context per choice, as winogrande): not supported yet"
            )
        return q

    def shot_turn(self, fs_doc: Doc, fc: FewshotConfig) -> tuple[str, str]:
        """One example as (question with its delimiter, answer with the few-shot delimiter)."""
        q = self.text(fs_doc, fc.doc_to_text, "fewshot_config.doc_to_text")
        choices = self.choices(fs_doc, fc.doc_to_choice, "fewshot_config.doc_to_choice") if fc.doc_to_choice else None
        a = self.target(fs_doc, fc.doc_to_target, "fewshot_config.doc_to_target")
        gen_prefix = self._resolve_field(fs_doc, fc.gen_prefix, "fewshot_config.gen_prefix")
        if isinstance(q, int) and choices:
            q, choices = choices[q], None
        if not isinstance(q, str):
            raise HarnessError(f"{self._where('doc_to_text')} must give a string for a few-shot example")
        tgt, few = fc.target_delimiter or "", fc.fewshot_delimiter or ""
        has_answer = a is not None and a != ""
        user = q + (tgt if (has_answer and not gen_prefix) or (gen_prefix and requires_delimiter(q, gen_prefix)) else "")
        if not has_answer:
            return user, gen_prefix or ""
        answer = choices[a] if choices and isinstance(a, int) else a[0] if isinstance(a, list) else a
        if not isinstance(answer, str):
            raise HarnessError(f"{self._where('doc_to_target')} gives {answer!r} for a few-shot example; give the answer text, or choices to index")
        return user, maybe_delimit(gen_prefix, answer, " ") + few

    def shot_answer(self, doc: Doc) -> str:
        return self.shot_turn(doc, self.fewshot_settings())[1].removesuffix(self.fewshot_settings().fewshot_delimiter or "")

    def context(self, doc: Doc, index: int, chat: ChatFormatter | None) -> str:
        """The prompt before the answer: description, the shots, the question (and gen_prefix)."""
        c = self.config
        fc = self.fewshot_settings()
        description = self._resolve_field(doc, c.description, "description") or ""
        # lm-eval's --system_instruction goes before the description (its maybe_delimit)
        description = maybe_delimit(getattr(self, "system_instruction", ""), description, c.fewshot_delimiter)
        turns = [self.shot_turn(s, fc) for s in self.shots(index)]
        question = self._question(doc)
        gen_prefix = self.prefix(doc)
        if chat is not None:
            if not getattr(self, "fewshot_as_multiturn", True):  # lm-eval: shots and question in one user turn
                messages = chat_messages([], "".join(u + a for u, a in turns) + question, system=description or None)
                return chat(messages) + (gen_prefix or "")
            shots = [(u.removesuffix(fc.target_delimiter or ""), a.removesuffix(fc.fewshot_delimiter or "").strip()) for u, a in turns]
            return chat(chat_messages(shots, question, system=description or None)) + (gen_prefix or "")
        tail = question + (c.target_delimiter if gen_prefix and requires_delimiter(question, gen_prefix) else "")
        return description + "".join(u + a for u, a in turns) + tail + (gen_prefix or "")
