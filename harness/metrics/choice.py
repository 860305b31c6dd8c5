"""Choice and match metrics: acc, acc_norm (lm-evaluation-harness definitions), exact_match."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from harness.metrics.base import Metric, Sample, register_metric


@register_metric
class Accuracy(Metric):
    """multiple_choice: the gold choice has the highest log-likelihood.
    loglikelihood: the continuation is the greedy one (lambada-style accuracy)."""

    name = "acc"
    output_types = frozenset({"multiple_choice", "loglikelihood"})

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        out = []
        for s in samples:
            lls = s.loglikelihoods or []
            if s.output_type == "loglikelihood":
                out.append(float(all(greedy for _, greedy in lls)))
            else:
                out.append(float(_argmax([lp for lp, _ in lls]) == int(s.target)))
        return out


@register_metric
class NormalizedAccuracy(Metric):
    """multiple_choice: highest log-likelihood per UTF-8 byte of the choice (lm-evaluation-harness acc_norm)."""

    name = "acc_norm"
    output_types = frozenset({"multiple_choice"})

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        out = []
        for s in samples:
            lengths = [max(1, len(c.encode("utf-8"))) for c in s.choices or []]
            scores = [lp / n for (lp, _), n in zip(s.loglikelihoods or [], lengths)]
            out.append(float(_argmax(scores) == int(s.target)))
        return out


@register_metric
class ExactMatch(Metric):
    """generate_until: the prediction equals a reference after the configured normalization."""

    name = "exact_match"
    output_types = frozenset({"generate_until"})
    options = {"ignore_case": False, "ignore_punctuation": False, "strip": True, "regexes_to_ignore": []}

    def normalize(self, text: str) -> str:
        for pattern in self.config["regexes_to_ignore"]:
            text = re.sub(pattern, "", text)
        if self.config["ignore_case"]:
            text = text.lower()
        if self.config["ignore_punctuation"]:
            text = text.translate(str.maketrans("", "", string.punctuation))
        if self.config["strip"]:
            text = text.strip()
        return text

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        return [
            float(any(self.normalize(s.prediction or "") == self.normalize(r) for r in s.references))
            for s in samples
        ]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__) if values else -1
