"""Input checks shared by every generation metric: one place, errors that name the position.

Metrics call `generation_inputs(name, samples)`; `harness score` and the evaluate modules call
`check_texts` with labels such as "line 3 of preds.txt" so an error points at the bad line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.metrics.base import Sample


def check_texts(
    metric: str,
    predictions: Sequence[Any],
    references: Sequence[Any] | None,
    *,
    labels: Sequence[str] | None = None,
    source: str | None = None,
    need_references: bool = True,
    what: str = "prediction",
) -> tuple[list[str], list[list[str]]]:
    """Validate predictions (strings) and references (a string or a non-empty list of strings each).

    Returns the predictions and the references as one list of strings per prediction. Raises
    HarnessError naming the metric, the source and the position of the first bad item.
    """
    where = f" in {source}" if source else ""
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise HarnessError(
            f"metric {metric!r}: {what}s{where} must be a list of strings, got {type(predictions).__name__}"
        )
    if len(predictions) == 0:
        raise HarnessError(f"metric {metric!r}: there are no {what}s to score{where}")

    def at(i: int) -> str:
        label = f" ({labels[i]})" if labels is not None and i < len(labels) else ""
        return f"position {i}{label}{where}"

    preds: list[str] = []
    for i, p in enumerate(predictions):
        if p is None:
            raise HarnessError(f"metric {metric!r}: the {what} at {at(i)} is None; expected a string")
        if not isinstance(p, str):
            raise HarnessError(f"metric {metric!r}: the {what} at {at(i)} is a {type(p).__name__}; expected a string")
        preds.append(p)

    if references is None:
        if need_references:
            raise HarnessError(f"metric {metric!r} needs references{where}; none were given")
        return preds, [[] for _ in preds]
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise HarnessError(f"metric {metric!r}: references{where} must be a list, got {type(references).__name__}")
    if len(references) != len(preds):
        first = min(len(references), len(preds))
        raise HarnessError(
            f"metric {metric!r}: {len(preds)} {what}s but {len(references)} references{where}; "
            f"the first unpaired item is at position {first}"
        )
    refs: list[list[str]] = []
    for i, r in enumerate(references):
        items = [r] if isinstance(r, str) or r is None else r
        if not isinstance(items, (list, tuple)):
            raise HarnessError(
                f"metric {metric!r}: the reference at {at(i)} is a {type(r).__name__}; expected a string or a list of strings"
            )
        if need_references and not items:
            raise HarnessError(f"metric {metric!r}: the reference list at {at(i)} is empty")
        for j, item in enumerate(items):
            which = "reference" if isinstance(r, str) or r is None else f"reference {j}"
            if item is None:
                raise HarnessError(f"metric {metric!r}: the {which} at {at(i)} is None; expected a string")
            if not isinstance(item, str):
                raise HarnessError(
                    f"metric {metric!r}: the {which} at {at(i)} is a {type(item).__name__}; expected a string"
                )
        refs.append(list(items))
    return preds, refs


def generation_inputs(
    metric: str, samples: Sequence[Sample], *, need_references: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Predictions and references of generate_until samples, checked by `check_texts`."""
    labels = [f"doc {s.doc_id}" for s in samples]
    references = [s.target for s in samples]
    if not need_references and all(r is None for r in references):
        references = None
    return check_texts(
        metric, [s.prediction for s in samples], references, labels=labels, need_references=need_references
    )


def sample_language(metric: str, samples: Sequence[Sample]) -> str | None:
    """The one language of these samples (None when unset); mixed languages are an error."""
    languages = {s.language for s in samples if s.language}
    if len(languages) > 1:
        raise HarnessError(
            f"metric {metric!r}: samples mix languages {sorted(languages)}; score each language separately"
        )
    return next(iter(languages), None)


def primary_language(language: str | None) -> str | None:
    """'zh-Hans' / 'zh_CN' / 'ZH' -> 'zh'."""
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower()


CJK_LANGUAGES = frozenset({"zh", "ja", "ko", "yue", "cmn", "wuu", "lzh"})
