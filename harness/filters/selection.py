"""Selection filters (lm-evaluation-harness lm_eval/filters/selection.py): which response(s) to keep."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.filters import Filter, register_filter


@register_filter("take_first")
class TakeFirst(Filter):
    """Each document's first response (lm-eval's default pipeline, named "none")."""

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [r[0] for r in resps]


@register_filter("take_first_k")
class TakeFirstK(Filter):
    """Each document's first k responses (needs `repeats` of at least k)."""

    def __init__(self, k: int, **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError("k must be a positive integer")
        self.k = k

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        resps = list(resps)
        if resps and len(resps[0]) < self.k:
            raise HarnessError(f"filter take_first_k: k is {self.k} but each document has {len(resps[0])} responses; raise the task's `repeats`")
        return [r[: self.k] for r in resps]


@register_filter("majority_vote")
class MajorityVote(Filter):
    """Each document's most frequent response, as a one-element list (ties: the first seen)."""

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[Counter(r).most_common(1)[0][0]] for r in resps]
