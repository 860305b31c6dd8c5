"""Score outputs a user already has, without a model, with bootstrap 95% CIs (`harness score`).

    harness score --metric bleu --metric chrf --predictions hyp.txt --references ref.txt --lang zh
    harness score -m rougeL -m token_f1 --predictions out.jsonl --prediction-field output --json

Plain-text files hold one item per line (trailing whitespace stripped, as sacrebleu's command line
does); several --references files give several references per line. A .jsonl file holds one
object per line; the reference field may be a string or a list of strings, and when no
--references file is given the references are read from the predictions file itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.storage import json_lines
from harness.metrics.base import Metric, Sample, get_metric, metric_names
from harness.metrics.inputs import check_texts
from harness.metrics.stats import MetricValue, summarize

_REFERENCE_FREE = ("distinct_1", "distinct_2", "judge_rating")


@dataclass
class _Column:
    texts: list[Any]
    labels: list[str]
    records: list[dict | None]


def score_files(
    metrics: list[str],
    predictions: str,
    references: list[str] | None = None,
    *,
    lang: str | None = None,
    prediction_field: str = "prediction",
    reference_field: str = "reference",
    options: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 1234,
) -> dict[str, Any]:
    """The `harness score` computation, returning what --json prints."""
    if len(set(metrics)) != len(metrics):
        raise HarnessError(f"a metric is listed twice: {metrics}")
    instances = _instantiate(metrics, _parse_options(options or [], metrics))
    preds = read_column(predictions, prediction_field)
    refs = _read_references(preds, predictions, references, reference_field)
    for name, metric in instances.items():
        need = name not in _REFERENCE_FREE and not (name == "judge_rating" and metric.config.get("use_reference"))
        check_texts(name, preds.texts, refs, labels=preds.labels, source=predictions, need_references=need)
    samples = make_samples(preds.texts, refs, lang=lang, extras=preds.records)
    out = {name: score_samples(metric, samples, n_boot=n_boot, seed=seed) for name, metric in instances.items()}
    return {
        "predictions": predictions,
        "references": references or ([predictions] if refs is not None else []),
        "n": len(samples),
        "lang": lang,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "ci": "percentile 95%"},
        "metrics": out,
    }


def score(
    metric: str | Metric,
    predictions: list[str],
    references: list[Any] | None = None,
    *,
    lang: str | None = None,
    extras: list[dict | None] | None = None,
    n_boot: int = 1000,
    seed: int = 1234,
    **options: Any,
) -> dict[str, Any]:
    """Score texts from Python: value, stderr, 95% CI, n, higher_is_better, signature, per-sample scores.

    score("bleu", ["the cat sat"], [["the cat sat down", "a cat sat"]], lang="en")["value"]
    """
    instance = get_metric(metric, **options) if isinstance(metric, str) else metric
    if references is not None and not isinstance(references, str) and len(references) != len(predictions):
        check_texts(instance.name, predictions, references)  # raises, naming the first unpaired position
    samples = make_samples(predictions, references, lang=lang, extras=extras)
    return score_samples(instance, samples, n_boot=n_boot, seed=seed, per_sample=True)


def make_samples(
    predictions: list[Any],
    references: list[Any] | None,
    *,
    lang: str | None = None,
    extras: list[dict | None] | None = None,
) -> list[Sample]:
    """generate_until samples for texts (references: a string or a list of strings each)."""
    return [
        Sample(
            doc_id=str(i),
            output_type="generate_until",
            prediction=p,
            target=None if references is None or i >= len(references) else references[i],
            language=lang,
            extra=dict((extras[i] if extras is not None and i < len(extras) else None) or {}),
        )
        for i, p in enumerate(predictions)
    ]


def score_samples(
    metric: Metric, samples: list[Sample], *, n_boot: int = 1000, seed: int = 1234, per_sample: bool = False
) -> dict[str, Any]:
    """The metric's value with its bootstrap CI and signature (and per-sample scores if asked)."""
    stats = metric.sample_stats(samples)
    out = {**_value_dict(summarize(metric, stats, n_boot=n_boot, seed=seed)), "signature": metric.signature()}
    if per_sample:
        out["per_sample"] = [metric.sample_score(s) for s in stats]
    return out


def read_column(path: str, field: str) -> _Column:
    """One text per line of a plain-text file, or `field` of each object of a .jsonl file."""
    file = Path(path)
    if not file.is_file():
        raise HarnessError(f"file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HarnessError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if file.suffix.lower() != ".jsonl":
        return _Column(
            [line.rstrip() for line in lines],
            [f"line {i} of {path}" for i in range(1, len(lines) + 1)],
            [None] * len(lines),
        )
    texts, labels, records = [], [], []
    for number, record in json_lines(lines, path):
        if not isinstance(record, dict):
            raise HarnessError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        if field not in record:
            raise HarnessError(f"{path}, line {number}: no field {field!r} (fields: {', '.join(record) or 'none'})")
        texts.append(record[field])
        labels.append(f"line {number} of {path}")
        records.append(record)
    return _Column(texts, labels, records)


def _read_references(preds: _Column, predictions: str, files: list[str] | None, field: str) -> list[Any] | None:
    if not files:
        if preds.records and preds.records[0] is not None and all(field in (r or {}) for r in preds.records):
            return [r[field] for r in preds.records]  # type: ignore[index]
        return None
    columns = [read_column(f, field) for f in files]
    for f, column in zip(files, columns):
        if len(column.texts) != len(preds.texts):
            first = min(len(column.texts), len(preds.texts))
            raise HarnessError(
                f"{predictions} has {len(preds.texts)} predictions but {f} has {len(column.texts)} references; "
                f"the first unpaired item is at position {first}"
            )
    if len(columns) == 1:
        return columns[0].texts
    merged = []
    for i in range(len(preds.texts)):
        item: list[Any] = []
        for column in columns:
            value = column.texts[i]
            item.extend(value if isinstance(value, list) else [value])
        merged.append(item)
    return merged


def _parse_options(items: list[str], metrics: list[str]) -> dict[str, dict[str, Any]]:
    import yaml

    per_metric: dict[str, dict[str, Any]] = {m: {} for m in metrics}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise HarnessError(f"--option {item!r}: expected KEY=VALUE or METRIC.KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        target, dot, name = key.rpartition(".")
        targets = [target] if dot else metrics
        if dot and target not in per_metric:
            raise HarnessError(f"--option {item!r}: metric {target!r} is not among --metric {metrics}")
        accepted = [m for m in targets if name in _metric_options(m)]
        if not accepted:
            raise HarnessError(f"--option {item!r}: no selected metric has an option {name!r}")
        for m in accepted:
            per_metric[m][name] = value
    return per_metric


def _metric_options(name: str) -> dict[str, Any]:
    from harness.metrics.base import metric_class

    return metric_class(name).options


def _instantiate(names: list[str], options: dict[str, dict[str, Any]]) -> dict[str, Metric]:
    instances = {}
    for name in names:
        metric = get_metric(name, **options.get(name, {}))
        if "generate_until" not in metric.output_types:
            raise HarnessError(
                f"metric {name!r} scores model log-likelihoods, not text; harness score takes: "
                + ", ".join(generation_metrics())
            )
        instances[name] = metric
    return instances


def generation_metrics() -> list[str]:
    from harness.metrics.base import metric_class

    return [m for m in metric_names() if "generate_until" in metric_class(m).output_types]


def _value_dict(value: MetricValue) -> dict[str, Any]:
    d = value.to_dict()
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
