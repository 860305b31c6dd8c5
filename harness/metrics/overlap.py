"""Overlap metrics: ROUGE through rouge-score; BLEU, chrF, chrF++ and TER through sacrebleu.

ROUGE is a mean of per-sample F-measures (rouge-score's per-pair scores, identical on English).
BLEU, chrF and TER are corpus-level: each sample keeps sacrebleu's sufficient statistics (n-gram
matches and totals, edit counts) and the value is sacrebleu's score of their column sums, the
same number as `sacrebleu.corpus_score` and its command line. The bootstrap in stats.py resamples
these statistics, never sentence scores.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import unicodedata
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample, register_metric
from harness.metrics.inputs import CJK_LANGUAGES, generation_inputs, primary_language, sample_language

_GENERATE = frozenset({"generate_until"})

# -- ROUGE -------------------------------------------------------------------------------------

# Scripts written without spaces between words: one token per character.
_CJK_RANGES = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK and Kangxi radicals
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u31bf"  # Bopomofo, Hangul compatibility Jamo, Kanbun
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK extensions B-H
)
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
# A CJK character alone, or a run of other letters/digits (any script; underscore excluded).
_UNICODE_TOKEN = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+")


class UnicodeTokenizer:
    """rouge-score tokenizer that keeps every script: lowercased Unicode letter/digit runs, and one
    token per CJK character (rouge-score's default keeps only [a-z0-9], so Chinese scores 0).
    With use_stemmer, ASCII tokens longer than 3 characters are Porter-stemmed, as rouge-score does."""

    def __init__(self, use_stemmer: bool = False):
        self._stemmer = _porter() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _UNICODE_TOKEN.findall(text.lower())
        if self._stemmer is not None:
            stem = self._stemmer.stem
            tokens = [stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]
        return tokens


@functools.lru_cache(maxsize=1)
def _porter() -> Any:
    from nltk.stem import porter

    return porter.PorterStemmer()


@functools.lru_cache(maxsize=1 << 16)
def _tokens(kind: str, use_stemmer: bool, text: str) -> tuple[str, ...]:
    """Tokens of a text, memoized: rouge1, rouge2, rougeL and rougeLsum of one run tokenize the
    same texts (rouge-score's single scorer would tokenize them once too)."""
    if kind == "unicode":
        return tuple(UnicodeTokenizer(use_stemmer).tokenize(text))
    from rouge_score import tokenize

    return tuple(tokenize.tokenize(text, _porter() if use_stemmer else None))


class _MemoTokenizer:
    """rouge-score tokenizer object over `_tokens`; "default" is rouge-score's DefaultTokenizer."""

    def __init__(self, kind: str, use_stemmer: bool):
        self.kind, self.use_stemmer = kind, use_stemmer

    def tokenize(self, text: str) -> tuple[str, ...]:
        return _tokens(self.kind, self.use_stemmer, text)


def has_non_latin_letters(text: str) -> bool:
    """True if the text has CJK characters or letters of a non-Latin script (which rouge-score's
    default tokenizer would delete)."""
    if text.isascii():
        return False
    if _CJK_CHAR.search(text):
        return True
    return any(ord(ch) > 0x24F and ch.isalpha() and "LATIN" not in unicodedata.name(ch, "") for ch in text)


def resolve_rouge_tokenizer(choice: str, language: str | None, texts: Sequence[str]) -> str:
    """'auto' -> 'default' (rouge-score's own) for English or unlabelled Latin-script text,
    'unicode' for any other language or when a text holds CJK/non-Latin letters."""
    if choice in ("default", "unicode"):
        return choice
    if choice != "auto":
        raise HarnessError(f"ROUGE option tokenizer must be auto, default or unicode; got {choice!r}")
    lang = primary_language(language)
    if lang is not None:
        return "default" if lang == "en" else "unicode"
    return "unicode" if any(has_non_latin_letters(t) for t in texts) else "default"


class _Rouge(Metric):
    """Mean over samples of rouge-score's F-measure (or precision/recall), best reference per sample."""

    rouge_type: ClassVar[str]
    output_types = _GENERATE
    # use_stemmer False is rouge-score's (and HF evaluate's) default.
    options = {"use_stemmer": False, "tokenizer": "auto", "measure": "fmeasure"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.config["measure"] not in ("fmeasure", "precision", "recall"):
            raise HarnessError(f"metric {self.name!r}: measure must be fmeasure, precision or recall")
        self.resolved_tokenizer: str | None = None

    def scorer(self, tokenizer: str):
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer(
            [self.rouge_type], tokenizer=_MemoTokenizer(tokenizer, self.config["use_stemmer"])
        )

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        predictions, references = generation_inputs(self.name, samples)
        language = sample_language(self.name, samples)
        return self.score_texts(predictions, references, language)

    def score_texts(self, predictions: list[str], references: list[list[str]], language: str | None) -> list[float]:
        texts = predictions + [r for refs in references for r in refs]
        self.resolved_tokenizer = resolve_rouge_tokenizer(self.config["tokenizer"], language, texts)
        scorer = self.scorer(self.resolved_tokenizer)
        kind, measure = self.rouge_type, self.config["measure"]
        out = []
        for prediction, refs in zip(predictions, references):
            # score_multi keeps the reference with the best F-measure, as rouge-score does.
            scores = scorer.score(refs[0], prediction) if len(refs) == 1 else scorer.score_multi(refs, prediction)
            out.append(float(getattr(scores[kind], measure)))
        return out

    def signature(self) -> dict[str, Any]:
        tok = self.resolved_tokenizer or self.config["tokenizer"]
        version = importlib.metadata.version("rouge-score")
        stem = "yes" if self.config["use_stemmer"] else "no"
        sig = f"{self.rouge_type}|tok:{tok}|stem:{stem}|{self.config['measure']}"
        if self.rouge_type == "rougeLsum":
            sig += "|split:newline"
        return {
            "options": self.config,
            "tokenizer": tok,
            "tokenizer_note": "rouge-score DefaultTokenizer ([a-z0-9] only)"
            if tok == "default"
            else "Unicode letter/digit runs, one token per CJK character",
            "library": f"rouge-score {version}",
            "signature": f"{sig}|version:{version}",
        }


@register_metric
class Rouge1(_Rouge):
    name = "rouge1"
    rouge_type = "rouge1"


@register_metric
class Rouge2(_Rouge):
    name = "rouge2"
    rouge_type = "rouge2"


@register_metric
class RougeL(_Rouge):
    name = "rougeL"
    rouge_type = "rougeL"


@register_metric
class RougeLsum(_Rouge):
    """Summary-level LCS; sentences are the text's lines (split on newlines, as rouge-score does)."""

    name = "rougeLsum"
    rouge_type = "rougeLsum"


# -- sacrebleu: BLEU, chrF, chrF++, TER --------------------------------------------------------

# Tokenizers that fetch a SentencePiece model at first use: not allowed (the harness runs offline).
_DOWNLOADING_TOKENIZERS = frozenset({"spm", "flores101", "flores200", "spBLEU-1K"})
_UNSEGMENTED = frozenset({"ja", "ko", "th", "lo", "km", "my"})


def bleu_tokenizer_for(language: str | None) -> str:
    """sacrebleu tokenizer for a target language: zh for Chinese; char for Japanese, Korean and
    other unsegmented scripts (ja-mecab/ko-mecab need MeCab, so they are opt-in); 13a otherwise."""
    lang = primary_language(language)
    if lang in ("zh", "yue", "cmn", "wuu", "lzh"):
        return "zh"
    if lang in _UNSEGMENTED:
        return "char"
    return "13a"


def _sum_columns(stats: Sequence[Sequence[float]]) -> list:
    """Column sums exactly as sacrebleu adds them (same order, same types)."""
    from sacrebleu.utils import sum_of_lists

    return list(sum_of_lists(list(stats)))


class _SacreBLEU(Metric):
    output_types = _GENERATE

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.language: str | None = None
        self._scorer: Any = None
        self._scorer_language: Any = ()  # the language the cached scorer was built for

    def build(self, language: str | None, sentence: bool = False) -> Any:
        """The sacrebleu metric object for these options and this language."""
        raise NotImplementedError

    def scorer_for(self, language: str | None) -> Any:
        if self._scorer is None or self._scorer_language != language:
            self._scorer = self.build(language)
            self._scorer_language = language
        return self._scorer

    @cached_property
    def sentence_scorer(self) -> Any:
        return self.build(self.language, sentence=True)

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        predictions, references = generation_inputs(self.name, samples)
        return self.score_texts(predictions, references, sample_language(self.name, samples))

    def score_texts(self, predictions: list[str], references: list[list[str]], language: str | None) -> list[Any]:
        """Per-sample sufficient statistics, exactly those sacrebleu's corpus_score sums."""
        self.language = language
        scorer = self.scorer_for(language)
        width = max(len(r) for r in references)
        # sacrebleu's layout: one stream per reference slot; None where a sample has fewer.
        streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
        return [list(s) for s in scorer._extract_corpus_statistics(predictions, streams)]

    def aggregate(self, stats: Sequence[Any]) -> float:
        if not stats:
            return float("nan")
        return float(self.scorer_for(self.language)._compute_score_from_stats(_sum_columns(stats)).score)

    def aggregate_sums(self, sums: Sequence[float]) -> float:
        """The value from column sums of the statistics (the fast bootstrap path in stats.py)."""
        return float(self.scorer_for(self.language)._compute_score_from_stats(list(sums)).score)

    def sample_score(self, stat: Any) -> float | None:
        return float(self.sentence_scorer._compute_score_from_stats(list(stat)).score)

    def signature(self) -> dict[str, Any]:
        scorer = self.scorer_for(self.language)
        if not hasattr(scorer, "num_refs"):  # not evaluated yet: sacrebleu knows no reference count
            scorer.num_refs = "?"
        version = importlib.metadata.version("sacrebleu")
        return {
            "options": self.config,
            "language": self.language,
            "library": f"sacrebleu {version}",
            "signature": scorer.get_signature().format(),
        }


@register_metric
class BLEU(_SacreBLEU):
    """Corpus BLEU (sacrebleu). Tokenizer: option `tokenize`, else from the sample language."""

    name = "bleu"
    options = {
        "tokenize": None,  # None: from the language (zh, char for ja/ko, 13a otherwise)
        "lowercase": False,
        "smooth_method": "exp",
        "smooth_value": None,
        "max_ngram_order": 4,
    }

    def tokenizer_name(self, language: str | None) -> str:
        name = self.config["tokenize"] or bleu_tokenizer_for(language)
        if name in _DOWNLOADING_TOKENIZERS:
            raise HarnessError(
                f"metric 'bleu': tokenize {name!r} downloads a SentencePiece model at first use; "
                "use 13a, intl, zh, char, none, ja-mecab or ko-mecab"
            )
        return name

    def build(self, language: str | None, sentence: bool = False) -> Any:
        from sacrebleu.metrics import BLEU as SacreBLEU

        name = self.tokenizer_name(language)
        try:
            return SacreBLEU(
                tokenize=name,
                lowercase=self.config["lowercase"],
                smooth_method=self.config["smooth_method"],
                smooth_value=self.config["smooth_value"],
                max_ngram_order=self.config["max_ngram_order"],
                effective_order=sentence,  # sentence-level scores in logs use effective order
            )
        except (ImportError, RuntimeError, AssertionError, KeyError) as err:
            raise HarnessError(f"metric 'bleu': tokenizer {name!r} is unavailable: {err}") from None


class _ChrF(_SacreBLEU):
    default_word_order: ClassVar[int] = 0

    def build(self, language: str | None, sentence: bool = False) -> Any:
        from sacrebleu.metrics import CHRF

        return CHRF(
            char_order=self.config["char_order"],
            word_order=self.config["word_order"],
            beta=self.config["beta"],
            lowercase=self.config["lowercase"],
            whitespace=self.config["whitespace"],
            eps_smoothing=self.config["eps_smoothing"],
        )


_CHRF_OPTIONS = {"char_order": 6, "beta": 2, "lowercase": False, "whitespace": False, "eps_smoothing": False}


@register_metric
class ChrF(_ChrF):
    """Corpus chrF (sacrebleu): character 6-grams, beta 2."""

    name = "chrf"
    options = {**_CHRF_OPTIONS, "word_order": 0}


@register_metric
class ChrFPlusPlus(_ChrF):
    """Corpus chrF++ (sacrebleu): chrF plus word uni- and bigrams (word_order 2)."""

    name = "chrf_pp"
    options = {**_CHRF_OPTIONS, "word_order": 2}


@register_metric
class TER(_SacreBLEU):
    """Corpus TER (sacrebleu), lower is better. For Chinese, Japanese and Korean targets the default
    is normalized=True with asian_support=True (CJK split per character); otherwise sacrebleu's."""

    name = "ter"
    higher_is_better = False
    options = {"normalized": None, "no_punct": False, "asian_support": None, "case_sensitive": False}

    def build(self, language: str | None, sentence: bool = False) -> Any:
        from sacrebleu.metrics import TER as SacreTER

        cjk = primary_language(language) in CJK_LANGUAGES
        normalized = self.config["normalized"]
        asian = self.config["asian_support"]
        return SacreTER(
            normalized=cjk if normalized is None else normalized,
            no_punct=self.config["no_punct"],
            asian_support=cjk if asian is None else asian,
            case_sensitive=self.config["case_sensitive"],
        )
