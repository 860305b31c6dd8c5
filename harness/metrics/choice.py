"""Choice and match metrics, lm-evaluation-harness definitions (lm_eval/api/task.py and metrics.py):
acc, acc_norm (per character), acc_bytes (per UTF-8 byte), f1 and mcc over the predicted choices
(scikit-learn, as lm-eval aggregates them), exact_match (HF evaluate's, with lm-eval's options)."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
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
            if s.choices is None:  # one continuation: correct when it is the greedy one
                out.append(float(all(greedy for _, greedy in lls)))
            else:
                out.append(float(_argmax([lp for lp, _ in lls]) == int(s.target)))
        return out


class _LengthNormalizedAccuracy(Metric):
    """multiple_choice: the gold choice has the highest log-likelihood per unit of the choice's length."""

    output_types = frozenset({"multiple_choice"})

    def length(self, choice: str) -> int:
        raise NotImplementedError

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        out = []
        for s in samples:
            lengths = [max(1, self.length(c)) for c in s.choices or []]
            scores = [lp / n for (lp, _), n in zip(s.loglikelihoods or [], lengths)]
            out.append(float(_argmax(scores) == int(s.target)))
        return out


@register_metric
class NormalizedAccuracy(_LengthNormalizedAccuracy):
    """Log-likelihood per character of the choice (lm-evaluation-harness acc_norm)."""

    name = "acc_norm"

    def length(self, choice: str) -> int:
        return len(choice)


@register_metric
class ByteNormalizedAccuracy(_LengthNormalizedAccuracy):
    """Log-likelihood per UTF-8 byte of the choice (lm-evaluation-harness acc_bytes)."""

    name = "acc_bytes"

    def length(self, choice: str) -> int:
        return len(choice.encode("utf-8"))


class _ChoiceAgreement(Metric):
    """Corpus-level agreement of predicted (argmax) and gold choices; the statistic is [gold, pred]."""

    output_types = frozenset({"multiple_choice"})

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        return [[int(s.target), _argmax([lp for lp, _ in s.loglikelihoods or []])] for s in samples]

    def aggregate(self, stats: Sequence[Any]) -> float:
        if not stats:
            return float("nan")
        golds, preds = zip(*stats)
        return self.score(list(golds), list(preds))

    def score(self, golds: list[int], preds: list[int]) -> float:
        raise NotImplementedError

    def sample_score(self, stat: Any) -> float | None:
        return None  # a corpus statistic: no per-document value


@register_metric
class F1(_ChoiceAgreement):
    """scikit-learn's binary F1 of choice 1 over the predicted choices (lm-evaluation-harness f1,
    meant for two-choice tasks such as BoolQ-style yes/no)."""

    name = "f1"

    def score(self, golds: list[int], preds: list[int]) -> float:
        from sklearn.metrics import f1_score

        if len(set(golds) | set(preds)) > 2:
            raise HarnessError(
                "metric 'f1' is lm-evaluation-harness's binary F1 (choice 1 is positive); this task has "
                "more than two choices: use acc or mcc"
            )
        return float(f1_score(golds, preds, zero_division=0.0))


@register_metric
class MatthewsCorrelation(_ChoiceAgreement):
    """Matthews correlation of predicted and gold choices (scikit-learn; lm-evaluation-harness mcc)."""

    name = "mcc"

    def score(self, golds: list[int], preds: list[int]) -> float:
        from sklearn.metrics import matthews_corrcoef

        return float(matthews_corrcoef(golds, preds))


@register_metric
class ExactMatch(Metric):
    """generate_until: the prediction equals a reference after the configured normalization."""

    name = "exact_match"
    output_types = frozenset({"generate_until"})
    # HF evaluate's exact_match as lm-evaluation-harness ports it: regexes removed from prediction
    # and reference, then lowercase, then ASCII punctuation and digits removed. `strip` (ours, on by
    # default) trims both at the end; lm-evaluation-harness has no such step (`strip: false`).
    options = {"ignore_case": False, "ignore_punctuation": False, "ignore_numbers": False, "strip": True,
               "regexes_to_ignore": []}

    def __init__(self, **options: Any):
        if options.get("regexes_to_ignore") is None:
            options.pop("regexes_to_ignore", None)
        super().__init__(**options)
        patterns = self.config["regexes_to_ignore"]
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise HarnessError("metric 'exact_match': regexes_to_ignore must be a list of regular expressions")
        try:
            self._ignore = [re.compile(p) for p in patterns]
        except re.error as err:
            raise HarnessError(f"metric 'exact_match': regexes_to_ignore has a bad pattern ({err})") from None

    def normalize(self, text: str) -> str:
        for pattern in self._ignore:
            text = pattern.sub("", text)
        if self.config["ignore_case"]:
            text = text.lower()
        if self.config["ignore_punctuation"]:
            text = text.translate(str.maketrans("", "", string.punctuation))
        if self.config["ignore_numbers"]:
            text = text.translate(str.maketrans("", "", string.digits))
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
