"""LLM as judge, MT-Bench style (FastChat llm_judge prompts single-v1, single-math-v1, pair-v2).

`judge_rating`: the judge rates each answer 1-10, verdict parsed from "[[n]]". A verdict that does
not parse (or is out of range) gives the statistic rating None: the aggregate skips it and the
count is reported in signature() and logged, never silently dropped.

`pairwise_judge(...)`: each pair is judged twice with the answers' positions swapped; a verdict
that changes with the order is a tie; win rate counts ties as half.

The judge is any harness model spec, loaded once per process through harness.models.load_model.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample, register_metric
from harness.metrics.inputs import check_texts, generation_inputs
from harness.requests import GenerateRequest

log = logging.getLogger(__name__)

# FastChat fastchat/llm_judge/data/judge_prompts.jsonl, verbatim.
SINGLE_SYSTEM = "You are a helpful assistant."
SINGLE_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    'you must rate the response on a scale of 1 to 10 by strictly following this format: "[[rating]]", for '
    'example: "Rating: [[5]]".\n\n[Question]\n{question}\n\n[The Start of Assistant\'s Answer]\n{answer}\n'
    "[The End of Assistant's Answer]"
)
SINGLE_REFERENCE_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider correctness and "
    "helpfulness. You will be given a reference answer and the assistant's answer. Begin your evaluation by "
    "comparing the assistant's answer with the reference answer. Identify and correct any mistakes. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 "
    'by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n[Question]\n{question}\n\n'
    "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any positional biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
    "[The End of Assistant B's Answer]"
)

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")  # FastChat's one_score_pattern


def parse_rating(judgment: str) -> float | None:
    """The first "[[n]]" in the judgment if 1 <= n <= 10, else None (unparseable)."""
    match = _RATING.search(judgment or "")
    if match is None:
        return None
    value = float(match.group(1))
    return value if 1.0 <= value <= 10.0 else None


def parse_pair_verdict(judgment: str) -> str | None:
    """'A', 'B' or 'tie' from "[[A]]", "[[B]]", "[[C]]" (FastChat's order of checks); None if absent."""
    judgment = judgment or ""
    if "[[A]]" in judgment:
        return "A"
    if "[[B]]" in judgment:
        return "B"
    if "[[C]]" in judgment:
        return "tie"
    return None


# -- judge models ------------------------------------------------------------------------------

_JUDGES: dict[str, Any] = {}
_JUDGES_LOCK = threading.Lock()


def judge_model(spec: Any) -> Any:
    """A LanguageModel for a spec, loaded once per process; a LanguageModel passes through."""
    if not isinstance(spec, str):
        return spec
    with _JUDGES_LOCK:
        if spec not in _JUDGES:
            from harness.models import load_model

            _JUDGES[spec] = load_model(spec)
        return _JUDGES[spec]


def _spec(model: Any) -> str:
    if isinstance(model, str):
        return model
    info = getattr(model, "info", None)
    return getattr(info, "spec", None) or type(model).__name__


def render(model: Any, system: str, user: str) -> str:
    """The judge prompt: the model's chat template with a system and a user turn, else plain text."""
    if getattr(model, "chat_template", None):
        return model.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": user}])
    return f"{system}\n\n{user}\n\n"


def run_judge(model: Any, prompts: Sequence[str], max_gen_toks: int) -> list[str]:
    """Greedy judgments for rendered prompts."""
    requests = [GenerateRequest(prompt=p, until=(), max_gen_toks=max_gen_toks, temperature=0.0) for p in prompts]
    return list(model.generate(requests))


# -- single-answer rating ----------------------------------------------------------------------


@register_metric
class JudgeRating(Metric):
    """Mean 1-10 rating by a judge model (MT-Bench single-v1 prompt; single-math-v1 with
    use_reference). The question is sample.extra[question_field], else the prompt (sample.context)."""

    name = "judge_rating"
    output_types = frozenset({"generate_until"})
    needs_model = False  # it loads its own judge
    options = {"judge": "smollm2-135m", "max_gen_toks": 512, "use_reference": False, "question_field": "question"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.n_judged = 0
        self.n_unparseable = 0

    def question(self, sample: Sample) -> str:
        value = sample.extra.get(self.config["question_field"]) if sample.extra else None
        value = value if value is not None else sample.context
        if not isinstance(value, str):
            raise HarnessError(
                f"metric 'judge_rating': document {sample.doc_id} has no question "
                f"(extra[{self.config['question_field']!r}] or the prompt)"
            )
        return value

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        use_reference = self.config["use_reference"]
        predictions, references = generation_inputs(self.name, samples, need_references=use_reference)
        questions = [self.question(s) for s in samples]
        return self.rate(questions, predictions, [r[0] if r else "" for r in references])

    def rate(
        self, questions: Sequence[str], answers: Sequence[str], references: Sequence[str] | None = None
    ) -> list[dict]:
        """One {"rating": float | None, "judgment": str} per answer."""
        model = judge_model(self.config["judge"])
        template = SINGLE_REFERENCE_TEMPLATE if self.config["use_reference"] else SINGLE_TEMPLATE
        refs = references if references is not None else [""] * len(answers)
        prompts = [
            render(model, SINGLE_SYSTEM, template.format(question=q, answer=a, reference=r))
            for q, a, r in zip(questions, answers, refs)
        ]
        judgments = run_judge(model, prompts, self.config["max_gen_toks"])
        stats = [{"rating": parse_rating(j), "judgment": j} for j in judgments]
        self.n_judged = len(stats)
        self.n_unparseable = sum(s["rating"] is None for s in stats)
        if self.n_unparseable:
            log.warning(
                "judge_rating: %d of %d verdicts from %s had no [[1-10]] rating; they are left out of the mean",
                self.n_unparseable,
                self.n_judged,
                _spec(model),
            )
        return stats

    def aggregate(self, stats: Sequence[Any]) -> float:
        ratings = [r for r in (_rating(s) for s in stats) if r is not None]
        return sum(ratings) / len(ratings) if ratings else float("nan")

    def sample_score(self, stat: Any) -> float | None:
        return _rating(stat)

    def signature(self) -> dict[str, Any]:
        return {
            "options": self.config,
            "prompt": "mt-bench single-math-v1" if self.config["use_reference"] else "mt-bench single-v1",
            "judged": self.n_judged,
            "unparseable": self.n_unparseable,
        }


def _rating(stat: Any) -> float | None:
    value = stat.get("rating") if isinstance(stat, dict) else stat
    return None if value is None else float(value)


def unparseable_count(stats: Sequence[Any]) -> int:
    """How many judge_rating statistics carry no rating."""
    return sum(_rating(s) is None for s in stats)


# -- pairwise comparison -----------------------------------------------------------------------


def pairwise_judge(
    judge_model_spec: Any,
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    *,
    max_gen_toks: int = 512,
    n_boot: int = 1000,
    seed: int = 1234,
) -> dict[str, Any]:
    """Compare two systems' answers with a judge (MT-Bench pair-v2 prompt), both orders.

    Per question: the verdict with A first and the verdict with B first (mapped back). Equal verdicts
    stand; different ones are a tie ("inconsistent"). A question where either verdict does not
    parse is "unparseable": counted and left out of the win rate. win_rate_a = (wins_a + ties/2) /
    decided (None when nothing was decided), with a seeded bootstrap 95% CI.
    """
    import numpy as np

    from harness.metrics.stats import bootstrap_indices

    checked = {}
    for what, texts in (("question", questions), ("answer_a", answers_a), ("answer_b", answers_b)):
        checked[what], _ = check_texts("pairwise_judge", texts, None, need_references=False, what=what)
    lengths = {what: len(texts) for what, texts in checked.items()}
    if len(set(lengths.values())) != 1:
        raise HarnessError(f"pairwise_judge: questions and answers differ in length: {lengths}")
    questions, answers_a, answers_b = checked["question"], checked["answer_a"], checked["answer_b"]
    model = judge_model(judge_model_spec)
    first = [
        render(model, PAIR_SYSTEM, PAIR_TEMPLATE.format(question=q, answer_a=a, answer_b=b))
        for q, a, b in zip(questions, answers_a, answers_b)
    ]
    swapped = [
        render(model, PAIR_SYSTEM, PAIR_TEMPLATE.format(question=q, answer_a=b, answer_b=a))
        for q, a, b in zip(questions, answers_a, answers_b)
    ]
    judgments = run_judge(model, first + swapped, max_gen_toks)
    n = len(questions)
    flip = {"A": "B", "B": "A", "tie": "tie", None: None}
    per_question, scores = [], []
    counts = {"wins_a": 0, "wins_b": 0, "ties": 0, "inconsistent": 0, "unparseable": 0}
    for i in range(n):
        v1 = parse_pair_verdict(judgments[i])
        v2 = flip[parse_pair_verdict(judgments[n + i])]  # in A/B terms of the original order
        if v1 is None or v2 is None:
            outcome = "unparseable"
            counts["unparseable"] += 1
        elif v1 == v2:
            outcome = v1
        else:
            outcome = "tie"
            counts["inconsistent"] += 1
        if outcome == "A":
            counts["wins_a"] += 1
        elif outcome == "B":
            counts["wins_b"] += 1
        elif outcome == "tie":
            counts["ties"] += 1
        if outcome != "unparseable":
            scores.append({"A": 1.0, "B": 0.0, "tie": 0.5}[outcome])
        per_question.append(
            {
                "verdict_ab": v1,
                "verdict_ba": v2,
                "outcome": outcome,
                "judgment_ab": judgments[i],
                "judgment_ba": judgments[n + i],
            }
        )
    decided = len(scores)
    win_rate = sum(scores) / decided if decided else None
    ci_low = ci_high = stderr = None
    if decided >= 2 and n_boot >= 2:
        arr = np.asarray(scores)
        boots = arr[bootstrap_indices(decided, n_boot, seed)].mean(axis=1)
        ci_low, ci_high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
        stderr = float(np.std(boots, ddof=1))
    if counts["unparseable"]:
        log.warning("pairwise_judge: %d of %d questions had an unparseable verdict", counts["unparseable"], n)
    return {
        "judge": _spec(model),
        "prompt": "mt-bench pair-v2, both orders",
        "n": n,
        "decided": decided,
        **counts,
        "win_rate_a": win_rate,
        "win_rate_b": None if win_rate is None else 1.0 - win_rate,
        "win_rate_a_stderr": stderr,
        "win_rate_a_ci": [ci_low, ci_high] if ci_low is not None else None,
        "per_question": per_question,
    }
