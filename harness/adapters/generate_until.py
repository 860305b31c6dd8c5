"""generate_until: the model continues the prompt until a stop sequence; filters then pick the answer."""

from __future__ import annotations

import dataclasses
import zlib
from typing import TYPE_CHECKING, Any

from harness.adapters import register_adapter
from harness.adapters.base import AnswerHook, ChatFormatter, Instance, OutputAdapter, TokenCounter, answer_hook
from harness.errors import HarnessError
from harness.metrics.base import Sample
from harness.requests import GenerateRequest

if TYPE_CHECKING:
    from harness.data import Doc
    from harness.models.base import LanguageModel
    from harness.task import Task


@register_adapter
class GenerateUntilAdapter(OutputAdapter):
    """`repeats` requests per document (one unless the task asks for more, e.g. for majority vote)."""

    output_type = "generate_until"
    method = "generate_until"
    default_metrics = ("exact_match",)
    supports_filters = True
    generates = True

    def instance(self, task: Task, doc: Doc, index: int, chat: ChatFormatter | None) -> Instance:
        c = task.config
        doc_id = task.doc_id(doc, index)
        context = task.context(doc, index, chat)
        target = task.target(doc)
        if c.doc_to_choice is not None:  # as lm-evaluation-harness: the target indexes the choices
            choices = task.choices(doc)
            target = choices[task.gold_index(doc, choices)]
        g = c.generation_kwargs
        until = tuple(g.get("until", [c.fewshot_delimiter]))
        base_seed = g.get("seed", c.seed)
        first = GenerateRequest(
            prompt=context, until=until, max_gen_toks=int(g.get("max_gen_toks", 256)),
            temperature=float(g.get("temperature", 0.0)), do_sample=bool(g.get("do_sample", False)),
            top_p=float(g.get("top_p", 1.0)), top_k=int(g.get("top_k", 0)),
            repetition_penalty=float(g.get("repetition_penalty", 1.0)), seed=_seed(base_seed, doc_id),
        )
        requests = [first]
        for r in range(1, c.repeats):
            # Greedy repeats are the same request (answered once); sampled ones each get a seed.
            requests.append(dataclasses.replace(first, seed=_seed(base_seed, f"{doc_id}:{r}")) if not first.greedy else first)
        # lm-evaluation-harness scores references as the file gives them; this project's files trim them
        trim = (lambda t: str(t)) if c.lm_eval_format else (lambda t: str(t).strip())
        references = [trim(t) for t in target] if isinstance(target, list) else [trim(target)]
        return Instance(doc_id, index, self, requests, context, references, extra={"question": task.text(doc)})

    def payload(self, request: Any, rolling: dict[str, Any]) -> Any:
        return request

    def length(self, request: Any) -> int:
        return len(request.prompt)

    def call(self, model: LanguageModel, requests: list[Any], rolling: dict[str, Any],
             on_answer: AnswerHook | None = None) -> list[Any]:
        return model.generate(requests, **answer_hook(model.generate, on_answer))

    def count_tokens(self, counter: TokenCounter, requests: list[Any], results: list[Any]) -> int:
        return counter([r.prompt for r in requests]) + counter(list(results))

    def default_filter_list(self) -> list[dict[str, Any]]:
        # lm-evaluation-harness's default: the first generation, under the name "none"
        return [{"name": "none", "filter": [{"function": "take_first"}]}]

    def sample(self, task: Task, instance: Instance, response: Any) -> Sample:
        if isinstance(response, list):
            if len(response) != 1:
                raise HarnessError(
                    f"{task.where('filter_list')}: a pipeline leaves {len(response)} answers per document; "
                    "end it with take_first or majority_vote"
                )
            response = response[0]
        s = self.new_sample(task, instance)
        s.prediction = response if isinstance(response, str) else str(response)
        return s

    def lm_eval_results(self, sample: Sample) -> list[Any]:
        return [sample.prediction]  # the filtered answer

    def log_row(self, instance: Instance, responses: list[Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"output": responses[0]}
        if len(responses) > 1:
            row["outputs"] = responses
        return row


def _seed(seed: Any, key: str) -> int:
    return zlib.crc32(f"{seed}:{key}".encode()) & 0x7FFFFFFF
