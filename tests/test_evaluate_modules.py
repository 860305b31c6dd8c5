"""The harness metrics as `evaluate` modules: loaded offline from the package, combinable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from harness import evaluate_modules
from harness.errors import HarnessError

evaluate = pytest.importorskip("evaluate")

HYPS = ["The cat sat on the mat.", "A dog ran in the park today", "", "hello world"]
REFS = ["The cat is on the mat.", "The dog runs in the park.", "nothing here", "hello there world"]


def test_offline_and_every_module_file_exists():
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    for name in evaluate_modules.NAMES:
        path = Path(evaluate_modules.path(name))
        assert path.is_file() and path.parent == evaluate_modules.DIRECTORY
    with pytest.raises(HarnessError, match="no evaluate module"):
        evaluate_modules.path("bleurt")


@pytest.mark.parametrize("name", evaluate_modules.NAMES)
def test_every_module_loads(name):
    module = evaluate.load(evaluate_modules.path(name))
    assert isinstance(module, evaluate.EvaluationModule)
    assert name in module.description


def test_bleu_module_matches_sacrebleu():
    bleu = evaluate_modules.load("bleu")
    result = bleu.compute(predictions=HYPS, references=[[r] for r in REFS])
    assert result["bleu"] == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert result["bleu_signature"] == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    assert result["bleu_ci_low"] <= result["bleu_ci_high"]
    # plain string references work too
    assert bleu.compute(predictions=HYPS, references=REFS)["bleu"] == result["bleu"]


def test_options_at_load_and_at_compute():
    zh_h, zh_r = ["我喜欢吃苹果。", "今天天气很好"], ["我喜欢吃香蕉。", "今天天气很好。"]
    expected = sacrebleu.BLEU(tokenize="zh").corpus_score(zh_h, [zh_r]).score
    assert (
        evaluate.load(evaluate_modules.path("bleu"), tokenize="zh").compute(predictions=zh_h, references=zh_r)["bleu"]
        == expected
    )
    assert evaluate_modules.load("bleu").compute(predictions=zh_h, references=zh_r, lang="zh")["bleu"] == expected
    rouge = evaluate_modules.load("rouge1").compute(predictions=zh_h, references=zh_r, lang="zh")
    assert 0.5 < rouge["rouge1"] < 1 and "tok:unicode" in rouge["rouge1_signature"]
    with pytest.raises(HarnessError, match="unknown option"):
        evaluate_modules.load("bleu").compute(predictions=zh_h, references=zh_r, tokenise="zh")


def test_combine():
    suite = evaluate.combine([evaluate_modules.load(n) for n in ("bleu", "chrf", "rougeL", "token_f1", "distinct_2")])
    result = suite.compute(predictions=HYPS, references=REFS, n_boot=100)
    assert result["bleu"] == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert result["chrf"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    assert result["rougeL"] == pytest.approx(sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPS, REFS)) / 4)
    assert 0 < result["token_f1"] < 1
    assert result["distinct_2"] == 1.0
    for name in ("bleu", "chrf", "rougeL", "token_f1", "distinct_2"):
        assert {f"{name}_stderr", f"{name}_ci_low", f"{name}_ci_high", f"{name}_signature"} <= set(result)


def test_bad_input_is_a_harness_error():
    with pytest.raises(HarnessError, match=r"metric 'bleu': 2 predictions but 1 references"):
        evaluate_modules.load("bleu").compute(predictions=["a", "b"], references=["a"])
    with pytest.raises(HarnessError, match=r"metric 'rougeL': the prediction at position 1 is None"):
        evaluate_modules.load("rougeL").compute(predictions=["a", None], references=["a", "b"])
    with pytest.raises(HarnessError, match="no predictions"):
        evaluate_modules.load("chrf").compute(predictions=[], references=[])
