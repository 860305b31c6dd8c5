"""Perplexity family, lm-evaluation-harness definitions, summed over documents (corpus level).

word_perplexity = exp(-ΣLL / Σwords), words = len(re.split(r"\\s+", text));
byte_perplexity = exp(-ΣLL / Σutf-8 bytes); bits_per_byte = -ΣLL / (Σbytes · ln 2);
token_perplexity = exp(-ΣLL / Σtokens) (tokenizer-dependent: compare one model with itself);
perplexity = exp(-mean LL), lm-evaluation-harness's per-request perplexity (e.g. lambada).
For loglikelihood tasks the scored text is the continuation (gold-continuation perplexity); its
words are counted without the leading delimiter (`" Paris"` is one word, chat template or not),
its bytes are those scored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample, register_metric

_SCORED = frozenset({"loglikelihood_rolling", "loglikelihood"})


def _stat(sample: Sample) -> list[float]:
    if sample.loglikelihoods is None or sample.text is None:
        raise HarnessError(f"perplexity metrics need a scored text; document {sample.doc_id} has none")
    logprob = sum(lp for lp, _ in sample.loglikelihoods)
    words = sample.n_words if sample.n_words is not None else len(re.split(r"\s+", sample.text))
    n_bytes = len(sample.text.encode("utf-8"))
    return [logprob, sample.n_tokens or 0, words, n_bytes]


class _Perplexity(Metric):
    output_types = _SCORED
    higher_is_better = False
    column = 0  # which count divides the summed log-likelihood

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        return [_stat(s) for s in samples]

    def aggregate(self, stats: Sequence[Any]) -> float:
        total = sum(s[0] for s in stats)
        count = sum(s[self.column] for s in stats)
        return self.finish(total, count) if count else float("nan")

    def finish(self, total: float, count: float) -> float:
        return math.exp(-total / count)

    def sample_score(self, stat: Any) -> float | None:
        return self.finish(stat[0], stat[self.column]) if stat[self.column] else None


@register_metric
class TokenPerplexity(_Perplexity):
    name = "token_perplexity"
    output_types = frozenset({"loglikelihood_rolling"})
    column = 1


@register_metric
class WordPerplexity(_Perplexity):
    name = "word_perplexity"
    column = 2


@register_metric
class BytePerplexity(_Perplexity):
    name = "byte_perplexity"
    column = 3


@register_metric
class BitsPerByte(_Perplexity):
    name = "bits_per_byte"
    column = 3

    def finish(self, total: float, count: float) -> float:
        return -total / (count * math.log(2))


@register_metric
class Perplexity(Metric):
    """exp of the negative mean per-document log-likelihood (lm-evaluation-harness `perplexity`)."""

    name = "perplexity"
    output_types = frozenset({"loglikelihood"})
    higher_is_better = False

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        return [sum(lp for lp, _ in s.loglikelihoods or []) for s in samples]

    def aggregate(self, stats: Sequence[Any]) -> float:
        return math.exp(-sum(stats) / len(stats)) if stats else float("nan")

    def sample_score(self, stat: Any) -> float | None:
        return math.exp(-stat)
