"""ROUGE against rouge-score; BLEU, chrF, chrF++ and TER against sacrebleu (API and command line)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from harness.errors import HarnessError
from harness.metrics.base import Sample, get_metric
from harness.metrics.overlap import (
    UnicodeTokenizer,
    bleu_tokenizer_for,
    resolve_rouge_tokenizer,
)
from tests.conftest import REPO


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (REPO / "tasks/translation" / name).read_text().splitlines() if line.strip()]


def perturb_words(text: str, rng: random.Random, vocab: list[str]) -> str:
    out = []
    for w in text.split():
        r = rng.random()
        if r < 0.1:
            continue
        out.append(rng.choice(vocab) if r < 0.25 else w)
    return " ".join(out)


def perturb_chars(text: str, rng: random.Random) -> str:
    out = []
    for ch in text:
        r = rng.random()
        if r < 0.1:
            continue
        out.append("的" if r < 0.2 else ch)
    return "".join(out)


@pytest.fixture(scope="module")
def english():
    refs = [r["en"] for r in _rows("en_fr.jsonl")]
    vocab = sorted({w for s in refs for w in s.split()})
    rng = random.Random(7)
    hyps = [perturb_words(r, rng, vocab) for r in refs]
    hyps[3] = ""  # an empty hypothesis scores 0 and must not crash anything
    return hyps, refs


@pytest.fixture(scope="module")
def chinese():
    refs = [r["zh"] for r in _rows("en_zh.jsonl")]
    rng = random.Random(11)
    return [perturb_chars(r, rng) for r in refs], refs


def samples(hyps, refs, language=None):
    return [
        Sample(str(i), "generate_until", target=r, prediction=h, language=language)
        for i, (h, r) in enumerate(zip(hyps, refs))
    ]


def value(name, hyps, refs, language=None, **options):
    metric = get_metric(name, **options)
    stats = metric.sample_stats(samples(hyps, refs, language))
    return metric, stats, metric.aggregate(stats)


SACRE = {
    "bleu": lambda **kw: sacrebleu.BLEU(**kw),
    "chrf": lambda **kw: sacrebleu.CHRF(**kw),
    "chrf_pp": lambda **kw: sacrebleu.CHRF(word_order=2, **kw),
    "ter": lambda **kw: sacrebleu.TER(**kw),
}


@pytest.mark.parametrize("name", ["bleu", "chrf", "chrf_pp", "ter"])
def test_sacrebleu_corpus_scores_are_identical(name, english):
    hyps, refs = english
    metric, stats, ours = value(name, hyps, refs)
    reference = SACRE[name]()
    assert ours == reference.corpus_score(hyps, [refs]).score
    assert metric.signature()["signature"] == reference.get_signature().format()
    assert len(stats) == len(hyps) and all(isinstance(x, (int, float)) for x in stats[0])


@pytest.mark.parametrize("name", ["bleu", "chrf", "ter"])
def test_sacrebleu_multiple_and_variable_references(name, english):
    hyps, refs = english
    second = [r.replace("the", "a") for r in refs]
    targets = [[r, s] if i % 3 else [r] for i, (r, s) in enumerate(zip(refs, second))]
    metric, _, ours = value(name, hyps, targets)
    streams = [refs, [s if i % 3 else None for i, s in enumerate(second)]]
    reference = SACRE[name]()
    assert ours == reference.corpus_score(hyps, streams).score
    assert metric.signature()["signature"] == reference.get_signature().format()
    assert "nrefs:var" in metric.signature()["signature"]


def test_chinese_bleu_chrf_ter_follow_the_language(chinese):
    hyps, refs = chinese
    metric, _, bleu = value("bleu", hyps, refs, language="zh")
    assert bleu == sacrebleu.BLEU(tokenize="zh").corpus_score(hyps, [refs]).score
    assert "tok:zh" in metric.signature()["signature"]
    assert 20 < bleu < 100
    # 13a on unsegmented Chinese is the trap the language default avoids.
    assert value("bleu", hyps, refs, tokenize="13a")[2] < bleu / 3
    assert value("chrf", hyps, refs, language="zh")[2] == sacrebleu.CHRF().corpus_score(hyps, [refs]).score
    ter_metric, _, ter = value("ter", hyps, refs, language="zh")
    reference = sacrebleu.TER(normalized=True, asian_support=True)
    assert ter == reference.corpus_score(hyps, [refs]).score
    assert ter_metric.signature()["signature"] == reference.get_signature().format()
    assert ter < 60


def test_bleu_tokenizer_choice():
    assert bleu_tokenizer_for(None) == "13a"
    assert bleu_tokenizer_for("en") == "13a"
    assert bleu_tokenizer_for("zh-CN") == "zh"
    assert bleu_tokenizer_for("zh_Hant") == "zh"
    assert bleu_tokenizer_for("ja") == "char"
    assert bleu_tokenizer_for("ko") == "char"
    hyps, refs = ["私は猫が好きです"], ["私は犬が好きです"]
    metric, _, ours = value("bleu", hyps, refs, language="ja")
    assert ours == sacrebleu.BLEU(tokenize="char").corpus_score(hyps, [refs]).score > 0
    assert (
        value("bleu", hyps, refs, language="ja", tokenize="intl")[2]
        == sacrebleu.BLEU(tokenize="intl").corpus_score(hyps, [refs]).score
    )


@pytest.mark.parametrize("tok", ["flores101", "flores200", "spm"])
def test_downloading_tokenizers_are_refused(tok):
    with pytest.raises(HarnessError, match="downloads"):
        value("bleu", ["a"], ["a"], tokenize=tok)


def test_sacrebleu_command_line_matches(tmp_path, english, chinese):
    for tag, (hyps, refs), extra, lang in (
        ("en", english, [], None),
        ("zh", chinese, ["-tok", "zh", "--ter-normalized", "--ter-asian-support"], "zh"),
    ):
        hyp_file, ref_file = tmp_path / f"hyp.{tag}", tmp_path / f"ref.{tag}"
        hyp_file.write_text("\n".join(hyps) + "\n", encoding="utf-8")
        ref_file.write_text("\n".join(refs) + "\n", encoding="utf-8")
        for names, cli_metrics in (
            (["bleu", "chrf", "ter"], ["-m", "bleu", "chrf", "ter"]),
            (["chrf_pp"], ["-m", "chrf", "--chrf-word-order", "2"]),
        ):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sacrebleu",
                    str(ref_file),
                    "-i",
                    str(hyp_file),
                    *cli_metrics,
                    *extra,
                    "-w",
                    "10",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results = json.loads(out)
            results = results if isinstance(results, list) else [results]
            for name, cli in zip(names, results):
                metric, _, ours = value(name, hyps, refs, language=lang)
                assert f"{ours:.10f}" == f"{cli['score']:.10f}", (tag, name)
                assert metric.signature()["signature"] == cli["signature"], (tag, name)


@pytest.mark.parametrize("stem", [False, True])
@pytest.mark.parametrize("kind", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
def test_rouge_matches_rouge_score_on_english(kind, stem, english):
    hyps, refs = english
    # rougeLsum splits sentences on newlines: give it multi-line texts.
    if kind == "rougeLsum":
        hyps = [h.replace(", ", ",\n") for h in hyps]
        refs = [r.replace(", ", ",\n") for r in refs]
    metric, stats, ours = value(kind, hyps, refs, use_stemmer=stem)
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=stem)
    expected = [scorer.score(r, h)[kind].fmeasure for h, r in zip(hyps, refs)]
    assert stats == expected
    assert ours == sum(expected) / len(expected)
    assert metric.signature()["tokenizer"] == "default"
    assert f"stem:{'yes' if stem else 'no'}" in metric.signature()["signature"]


def test_rouge_multiple_references_and_measures(english):
    hyps, refs = english
    targets = [[r, h[: len(h) // 2]] for h, r in zip(hyps, refs)]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    _, stats, _ = value("rougeL", hyps, targets)
    assert stats == [scorer.score_multi(t, h)["rougeL"].fmeasure for h, t in zip(hyps, targets)]
    _, recall, _ = value("rouge1", hyps, refs, measure="recall")
    scorer1 = rouge_scorer.RougeScorer(["rouge1"])
    assert recall == [scorer1.score(r, h)["rouge1"].recall for h, r in zip(hyps, refs)]


def test_rouge_on_chinese_is_sensible(chinese):
    hyps, refs = chinese
    # rouge-score's own tokenizer deletes every CJK character: Chinese scores 0.
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    assert all(scorer.score(r, h)["rouge1"].fmeasure == 0 for h, r in zip(hyps, refs))
    from harness.metrics.overlap import UnicodeTokenizer

    # one token per CJK character, other scripts as lowercased runs
    assert UnicodeTokenizer().tokenize("我们在Beijing见面, 2024年!") == ["我", "们", "在", "beijing", "见", "面", "2024", "年"]
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        metric, stats, ours = value(kind, hyps, refs, language="zh")
        # the value is rouge-score's own, given that tokenizer
        reference = rouge_scorer.RougeScorer([kind], tokenizer=UnicodeTokenizer())
        expected = [reference.score(r, h)[kind].fmeasure for h, r in zip(hyps, refs)]
        assert stats == pytest.approx(expected, abs=1e-12), kind
        assert ours == pytest.approx(sum(expected) / len(expected), abs=1e-12), kind
        assert 0.5 < ours < 1.0, kind  # perturbed copies of the references: similar, not equal
        assert metric.signature()["tokenizer"] == "unicode"
        assert "tok:unicode" in metric.signature()["signature"]
        _, same, identical = value(kind, refs, refs, language="zh")
        assert identical == 1.0 and all(s == 1.0 for s in same)
    # without a language, CJK text is detected
    assert value("rouge1", hyps, refs)[0].signature()["tokenizer"] == "unicode"


def test_unicode_tokenizer():
    tok = UnicodeTokenizer()
    assert tok.tokenize("我喜欢 Python 3，很好！") == ["我", "喜", "欢", "python", "3", "很", "好"]
    assert tok.tokenize("日本語のテキスト") == list("日本語のテキスト")
    assert tok.tokenize("한국어 문장") == ["한", "국", "어", "문", "장"]
    assert tok.tokenize("Привет, мир") == ["привет", "мир"]
    assert tok.tokenize("naïve café") == ["naïve", "café"]
    assert UnicodeTokenizer(use_stemmer=True).tokenize("running cats 跑步") == ["run", "cat", "跑", "步"]
    assert resolve_rouge_tokenizer("auto", None, ["plain English text"]) == "default"
    assert resolve_rouge_tokenizer("auto", None, ["Привет, мир"]) == "unicode"
    assert resolve_rouge_tokenizer("auto", None, ["café crème"]) == "default"
    assert resolve_rouge_tokenizer("auto", "fr", ["café crème"]) == "unicode"
    assert resolve_rouge_tokenizer("auto", "en-US", ["日本"]) == "default"
    assert resolve_rouge_tokenizer("default", "zh", ["日本"]) == "default"


def test_russian_rouge_is_not_zero():
    _, stats, _ = value("rouge1", ["Кошка сидит на ковре"], ["Кошка сидела на ковре"])
    assert stats[0] == pytest.approx(0.75)


@pytest.mark.parametrize("name", ["bleu", "chrf", "chrf_pp", "ter", "rouge1", "rouge2", "rougeL", "rougeLsum"])
def test_empty_hypotheses_score_zero(name):
    metric, stats, ours = value(name, ["", ""], ["a reference", "another one"])
    expected = 100.0 if name == "ter" else 0.0
    assert ours == expected
    assert metric.sample_score(stats[0]) == expected


def test_sentence_scores_for_logs(english):
    hyps, refs = english
    metric, stats, _ = value("bleu", hyps[:10], refs[:10])
    for h, r, s in zip(hyps, refs, stats):
        assert metric.sample_score(s) == pytest.approx(sacrebleu.sentence_bleu(h, [r]).score)
    metric, stats, _ = value("chrf", hyps[:10], refs[:10])
    for h, r, s in zip(hyps, refs, stats):
        assert metric.sample_score(s) == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score)


@pytest.mark.parametrize("name", ["bleu", "rougeL"])
def test_bad_inputs_name_metric_and_position(name):
    metric = get_metric(name)
    with pytest.raises(HarnessError, match=rf"metric '{name}'.*position 1 \(doc b\).*None"):
        metric.sample_stats(
            [
                Sample("a", "generate_until", target="x", prediction="x"),
                Sample("b", "generate_until", target="x", prediction=None),
            ]
        )
    with pytest.raises(HarnessError, match=r"position 0 \(doc a\).*int"):
        metric.sample_stats([Sample("a", "generate_until", target="x", prediction=3)])
    with pytest.raises(HarnessError, match=r"reference at position 0.*None"):
        metric.sample_stats([Sample("a", "generate_until", target=None, prediction="x")])
    with pytest.raises(HarnessError, match=r"reference 1 at position 0.*int"):
        metric.sample_stats([Sample("a", "generate_until", target=["x", 5], prediction="x")])
    with pytest.raises(HarnessError, match="no predictions"):
        metric.sample_stats([])


def test_unknown_option_is_an_error():
    with pytest.raises(HarnessError, match="no option"):
        get_metric("bleu", tokeniser="zh")
    with pytest.raises(HarnessError, match="tokenizer"):
        value("rouge1", ["a"], ["a"], tokenizer="whitespace")
