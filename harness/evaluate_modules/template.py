"""The one generic evaluate module: `module_class(name)` wraps the harness metric `name`.

The per-metric files in this folder are `Name = module_class("name")`; evaluate.load copies such
a file to its module cache and imports it, and the class imports the harness from the installed
package, so nothing is fetched from the hub.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from harness.errors import HarnessError
from harness.metrics.base import metric_class, metric_names
from harness.metrics.inputs import check_texts
from harness.metrics.scoring import score

_COMMON = {"lang": None, "n_boot": 1000, "seed": 1234}
_REFERENCE_FREE = {"distinct_1", "distinct_2", "judge_rating"}


def _features(name: str) -> list[datasets.Features] | datasets.Features:
    string = datasets.Value("string", id="sequence")
    if name == "judge_rating":
        return datasets.Features({"predictions": string, "questions": string})
    if name in _REFERENCE_FREE:
        return datasets.Features({"predictions": string})
    return [
        datasets.Features({"predictions": string, "references": datasets.Sequence(string, id="references")}),
        datasets.Features({"predictions": string, "references": string}),
    ]


def _all_option_names() -> set[str]:
    names: set[str] = set(_COMMON) | {"questions", "references"}
    for m in metric_names():
        names |= set(metric_class(m).options)
    return names


def _as_list(values: Any) -> Any:
    return values if isinstance(values, (str, list, tuple)) else list(values)


def module_class(name: str) -> type:
    """An evaluate.Metric subclass computing the harness metric `name`."""
    cls = metric_class(name)

    class HarnessModule(evaluate.Metric):
        metric_name = name

        def __init__(self, config_name: str | None = None, **kwargs: Any):
            own = {k: kwargs.pop(k) for k in list(kwargs) if k in cls.options or k in _COMMON}
            super().__init__(config_name=config_name, **kwargs)
            self.harness_options = own

        def compute(self, *, predictions=None, references=None, **kwargs):
            """Compute the harness metric (inputs are checked first, errors name the position)."""
            # Check before evaluate's own batching, which fails obscurely on an empty list.
            if predictions is not None:
                free = name in _REFERENCE_FREE
                check_texts(
                    name,
                    _as_list(predictions),
                    None if free or references is None else _as_list(references),
                    need_references=not free,
                )
            return super().compute(predictions=predictions, references=references, **kwargs)

        def _info(self) -> evaluate.MetricInfo:
            doc = (cls.__doc__ or name).strip()
            return evaluate.MetricInfo(
                description=f"harness metric {name}: {doc}",
                citation="",
                inputs_description=(
                    f"predictions: list of str; references: list of str or of lists of str. "
                    f"Options: {', '.join(sorted({**cls.options, **_COMMON}))}."
                ),
                features=_features(name),
                homepage="docs/metrics.md",
            )

        def _compute(self, predictions, references=None, questions=None, **kwargs):
            options = {**self.harness_options, **kwargs}
            unknown = sorted(set(options) - _all_option_names())
            if unknown:
                raise HarnessError(f"evaluate module {name!r}: unknown option {unknown[0]!r}")
            metric = cls(**{k: v for k, v in options.items() if k in cls.options})
            result = score(
                metric,
                list(predictions),
                None if references is None else list(references),
                lang=options.get("lang"),
                extras=None if questions is None else [{"question": q} for q in questions],
                n_boot=options.get("n_boot", 1000),
                seed=options.get("seed", 1234),
            )
            signature = result["signature"]
            return {
                name: result["value"],
                f"{name}_stderr": result["stderr"],
                f"{name}_ci_low": result["ci_low"],
                f"{name}_ci_high": result["ci_high"],
                f"{name}_signature": signature.get("signature") or str(signature),
            }

    HarnessModule.__name__ = HarnessModule.__qualname__ = name
    return HarnessModule
