"""Transformation filters (lm-evaluation-harness lm_eval/filters/transformation.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from harness.filters import Filter, register_filter


@register_filter("lowercase")
class Lowercase(Filter):
    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[r.lower() for r in rs] for rs in resps]


@register_filter("uppercase")
class Uppercase(Filter):
    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[r.upper() for r in rs] for rs in resps]


@register_filter("map")
class MapFilter(Filter):
    """Each response looked up in `mapping_dict`, `default_value` when absent."""

    def __init__(self, mapping_dict: dict | None = None, default_value: Any = None, **options: Any) -> None:
        super().__init__(**options)
        if mapping_dict is not None and not isinstance(mapping_dict, dict):
            raise ValueError("mapping_dict must be a mapping")
        self.mapping, self.default = mapping_dict or {}, default_value

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[self.mapping.get(r, self.default) for r in rs] for rs in resps]


_SPAN_LABELS = {
    "person": "PER", "location": "LOC", "organization": "ORG", "counties": "LOC", "places": "LOC",
    "people": "PER", "persons": "PER", "company": "ORG", "country": "LOC", "continent": "LOC",
    "time": "DATE", "date": "DATE", "per": "PER", "loc": "LOC", "org": "ORG",
}


def _format_ner_text(text: str) -> str:
    text = text.lower()
    for key, value in _SPAN_LABELS.items():
        # only the label (the token before a ":"), never entity text
        text = re.sub(rf"\b{re.escape(key)}\s*:", f"{value}:", text)
    text = "$".join(text.split("$$"))
    return text.rstrip("$$")


def _format_named_entities(text: str) -> str:
    text = text.replace("\n", "$").strip()
    entities = []
    for label, values in re.findall(r"\b(PER|LOC|ORG|DATE):\s*([^$]+)", text):
        for entity in (v.strip() for v in values.split(",")):
            if entity.lower() != "none":
                entities.append(f"{label.lower()}: {entity}")
    return " $ ".join(entities)


@register_filter("format_span")
class FormatSpan(Filter):
    """Named-entity answers normalized to `label: entity $ label: entity` (lm-eval's SPANFilter)."""

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[_format_named_entities(_format_ner_text(r.lower())) for r in rs] for rs in resps]
