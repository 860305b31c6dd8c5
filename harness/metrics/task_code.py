"""Scoring with task code (--trust-task-code), as lm-evaluation-harness 0.4.13 does it.

Three forms of lm-evaluation-harness task files score with Python beside the YAML:

- `process_results: !function utils.f`: `f(doc, results)` returns `{metric: per-document value}`
  for every document; each `metric_list` entry aggregates its key over the documents.
- `metric: !function utils.g` (generation tasks): `g(references=[gold], predictions=[answer], **options)`
  per document (a dict result adds one metric per key); with several references, the document
  scores 1 when any reference does (for `exact_match`: when the score is above 0).
- `aggregation: !function utils.agg` on any metric: `agg(per-document values)` replaces the
  metric's aggregation.

`results` is what lm-evaluation-harness hands over: `[(loglikelihood, is_greedy), ...]` per
continuation or choice, `[loglikelihood]` for rolling perplexity, `[filtered answer]` for
generation. Named aggregations are lm-evaluation-harness's (`lm_eval.api.metrics`), ported here so
scoring needs no lm-eval install; a metric without one takes lm-eval's default for its name (else
the mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.metrics.base import Metric, Sample
from harness.taskfile import FunctionRef

if TYPE_CHECKING:
    from harness.task_docs import TaskDocs


def _mean(items: Sequence[Any]) -> float:
    return sum(items) / len(items)


def _weighted_mean(items: Sequence[Any]) -> float:
    a, b = zip(*items)
    return sum(a) / sum(b)


def _pairs(items: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    golds, preds = zip(*items)
    return list(golds), list(preds)


def _f1(items: Sequence[Any]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(*_pairs(items)))


def _mcc(items: Sequence[Any]) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(*_pairs(items)))


def _sacreformat(refs: Sequence[Any], preds: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """lm-evaluation-harness's _sacreformat: references as sacrebleu's streams."""
    refs = list(refs)
    if isinstance(refs[0], str) or not isinstance(refs[0], Sequence):
        refs = [[r] for r in refs]
    streams = list(zip(*refs))
    preds = [p[0] if not isinstance(p, str) else p for p in preds]
    return streams, preds


def _sacrebleu(kind: str, **kwargs: Any) -> Callable[[Sequence[Any]], float]:
    def aggregate(items: Sequence[Any]) -> float:
        import sacrebleu

        refs, preds = _pairs(items)
        streams, hyps = _sacreformat(refs, preds)
        return float(getattr(sacrebleu, f"corpus_{kind}")(hyps, streams, **kwargs).score)

    return aggregate


def _brier(items: Sequence[Any]) -> float:
    import numpy as np

    gold, predictions = _pairs(items)
    predictions = np.array(predictions)
    return float(np.mean(np.sum((predictions - np.eye(predictions.shape[1])[gold]) ** 2, axis=1)))


def _nanmean(items: Sequence[Any]) -> float:
    import numpy as np

    return float("nan") if not items or all(np.isnan(items)) else float(np.nanmean(items))


AGGREGATIONS: dict[str, Callable[[Sequence[Any]], float]] = {
    "mean": _mean,
    "nanmean": _nanmean,
    "median": lambda items: sorted(items)[len(items) // 2],
    "perplexity": lambda items: math.exp(-_mean(items)),
    "weighted_perplexity": lambda items: math.exp(-_weighted_mean(items)),
    "bits_per_byte": lambda items: -_weighted_mean(items) / math.log(2),
    "f1": _f1,
    "matthews_corrcoef": _mcc,
    "bleu": _sacrebleu("bleu"),
    "chrf": _sacrebleu("chrf"),
    "chrf++": _sacrebleu("chrf", word_order=2),
    "ter": _sacrebleu("ter"),
    "brier_score": _brier,
}
# lm-evaluation-harness's default aggregation per metric name (register_metric(aggregation=...)).
DEFAULT_AGGREGATION = {
    "perplexity": "perplexity", "word_perplexity": "weighted_perplexity", "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte", "f1": "f1", "mcc": "matthews_corrcoef", "bleu": "bleu", "chrf": "chrf",
    "ter": "ter", "brier_score": "brier_score",
}
LOWER_IS_BETTER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter", "brier_score"}


def plain(value: Any) -> Any:
    """A JSON-able copy of a per-document value (numpy scalars and arrays become Python's)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def lm_eval_results(sample: Sample) -> list[Any]:
    """The `results` argument lm-evaluation-harness's process_results receives for a document
    (each output type's adapter says what it is)."""
    from harness.adapters import get_adapter

    return get_adapter(sample.output_type).lm_eval_results(sample)


class TaskCodeMetric(Metric):
    """One metric whose per-document values come from task code (or whose aggregation does)."""

    options: dict[str, Any] = {}

    def __init__(self, name: str, values: Callable[[Sequence[Sample]], list[Any]], aggregation: Callable[[Sequence[Any]], float],
                 *, higher_is_better: bool, signature: dict[str, Any], mean: bool):
        self.name = name  # type: ignore[misc]
        self.higher_is_better = higher_is_better  # type: ignore[misc]
        self.config = {}
        self._values = values
        self._aggregation = aggregation
        self._signature = signature
        self._mean = mean

    def sample_stats(self, samples: Sequence[Sample]) -> list[Any]:
        return self._values(samples)

    def aggregate(self, stats: Sequence[Any]) -> float:
        if not stats:
            return float("nan")
        try:
            return float(self._aggregation(list(stats)))
        except HarnessError:
            raise
        except Exception as err:  # noqa: BLE001 - task code failing is the task's to fix
            raise HarnessError(f"{self._signature.get('where', self.name)}: aggregating {self.name!r} failed "
                               f"({type(err).__name__}: {err})") from None

    @property
    def corpus_level(self) -> bool:
        return not self._mean

    def sample_score(self, stat: Any) -> float | None:
        return float(stat) if isinstance(stat, (int, float)) else None

    def signature(self) -> dict[str, Any]:
        return dict(self._signature)


class _ProcessResults:
    """Runs `process_results` once per document for a list of samples, shared by its metrics."""

    def __init__(self, task: TaskDocs, function: Callable[..., Any], ref: FunctionRef):
        self.task, self.function, self.ref = task, function, ref
        # the last samples scored (held, so `is` cannot match a new list at a reused address)
        self._last: tuple[Sequence[Sample], list[dict[str, Any]]] | None = None

    def values(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        if self._last is not None and self._last[0] is samples:
            return self._last[1]
        docs = self.task.docs()
        if len(docs) != len(samples):
            raise HarnessError(f"{self.task._where('process_results')}: {len(samples)} samples for {len(docs)} documents")
        out = []
        for doc, sample in zip(docs, samples):
            try:
                result = self.function(doc, lm_eval_results(sample))
            except HarnessError:
                raise
            except Exception as err:  # noqa: BLE001
                raise HarnessError(f"{self.task._where('process_results')}: `{self.ref}` failed on document "
                                   f"{sample.doc_id} ({type(err).__name__}: {err})") from None
            if not isinstance(result, dict):
                raise HarnessError(f"{self.task._where('process_results')}: `{self.ref}` returned {type(result).__name__}, "
                                   "not a {metric: value} mapping")
            out.append(result)
        self._last = (samples, out)
        return out

    def column(self, name: str) -> Callable[[Sequence[Sample]], list[Any]]:
        def values(samples: Sequence[Sample]) -> list[Any]:
            rows = self.values(samples)
            missing = [i for i, r in enumerate(rows) if name not in r]
            if missing:
                raise HarnessError(f"{self.task._where('process_results')}: `{self.ref}` gives no {name!r} for document "
                                   f"{samples[missing[0]].doc_id} (metric_list names it); it gives {', '.join(map(str, rows[missing[0]]))}")
            return [plain(r[name]) for r in rows]

        return values


def _aggregation(task: TaskDocs, name: str, spec: Any, where: str) -> tuple[Callable[[Sequence[Any]], float], bool, str]:
    """(function, is it the mean, description) of a metric_list entry's aggregation."""
    if isinstance(spec, FunctionRef):
        return task.function(spec, where), False, str(spec)
    agg = spec if isinstance(spec, str) else DEFAULT_AGGREGATION.get(name, "mean")
    if agg not in AGGREGATIONS:
        raise HarnessError(f"{task._where(where)} is {agg!r}, not one of lm-evaluation-harness's aggregations "
                           f"({', '.join(AGGREGATIONS)}); name one or use `!function`")
    return AGGREGATIONS[agg], agg == "mean", agg


def _function_metric(task: TaskDocs, entry: Any, key: str) -> Callable[[Sequence[Sample]], list[Any]]:
    """lm-evaluation-harness's generate_until scoring with a `metric: !function` callable."""
    fn = task.function(entry.function, key)
    name = entry.metric

    def one(gold: Any, answer: Any) -> Any:
        try:
            score = fn(references=[gold], predictions=[answer], **entry.options)
        except TypeError:  # lm-eval's fallback for metrics of one (gold, answer) argument
            score = fn([gold, answer])
        return score[name] if isinstance(score, dict) and name in score else score

    def gold(doc: dict[str, Any]) -> Any:
        """lm-evaluation-harness's gold: the choice's text with doc_to_choice, else the target."""
        target = task.target(doc)
        if task.config.doc_to_choice is not None:
            choices = task.choices(doc)
            return choices[task.gold_index(doc, choices)]
        return target if isinstance(target, list) else str(target)

    def values(samples: Sequence[Sample]) -> list[Any]:
        out = []
        for doc, s in zip(task.docs(), samples, strict=True):
            try:
                golds = gold(doc)
                if isinstance(golds, list):  # several references: 1 when any scores
                    out.append(1.0 if any(_truthy(one(g, s.prediction)) for g in golds) else 0.0)
                else:
                    out.append(plain(one(golds, s.prediction)))
            except HarnessError:
                raise
            except Exception as err:  # noqa: BLE001
                raise HarnessError(f"{task._where(key)}: `{entry.function}` failed on document {s.doc_id} "
                                   f"({type(err).__name__}: {err})") from None
        return out

    return values


def _truthy(value: Any) -> bool:
    return bool(value > 0.0) if isinstance(value, (int, float)) else bool(value)


def task_code_metrics(task: TaskDocs, builtin: Callable[[Any], Metric]) -> list[Metric]:
    """The metrics of a task whose scoring uses task code (else `builtin(entry)` for each entry)."""
    c = task.config
    metrics: list[Metric] = []
    shared = _ProcessResults(task, task.function(c.process_results, "process_results"), c.process_results) if c.process_results else None
    for i, entry in enumerate(c.metric_list):
        where = f"metric_list[{i}].aggregation"
        key = f"metric_list[{i}].metric"
        hib = entry.higher_is_better if entry.higher_is_better is not None else entry.metric not in LOWER_IS_BETTER
        if shared is not None or entry.function is not None:
            if shared is None and not task.adapter.generates:  # type: ignore[attr-defined]
                raise HarnessError(f"{task._where(key)}: `{entry.function}` as a metric applies to generate_until tasks; "
                                   f"lm-evaluation-harness computes no such metric for {c.output_type}")
            agg, is_mean, agg_name = _aggregation(task, entry.metric, entry.aggregation, where)
            values = shared.column(entry.metric) if shared is not None else _function_metric(task, entry, key)
            code = str(c.process_results) if shared is not None else str(entry.function)
            metrics.append(TaskCodeMetric(entry.metric, values, agg, higher_is_better=hib, mean=is_mean,
                                          signature={"task_code": code, "aggregation": agg_name, "where": task._where(key)}))
        elif isinstance(entry.aggregation, FunctionRef):
            inner = builtin(entry)
            agg = task.function(entry.aggregation, where)
            metrics.append(TaskCodeMetric(inner.name, inner.sample_stats, agg, higher_is_better=hib, mean=False,
                                          signature={**inner.signature(), "aggregation": str(entry.aggregation),
                                                     "where": task._where(where)}))
        else:
            metrics.append(builtin(entry))
    return metrics


def uses_scoring_code(config: Any) -> bool:
    """Whether the task's scoring runs task code (process_results, metric or aggregation functions)."""
    return config.process_results is not None or any(
        m.function is not None or isinstance(m.aggregation, FunctionRef) for m in config.metric_list)
