"""Extraction filters (lm-evaluation-harness lm_eval/filters/extraction.py), the same semantics:
`regex` keeps the `group_select`-th match of `re.findall` (the first non-empty group of a
multi-group pattern), stripped, else `fallback` ("[invalid]")."""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from harness.errors import HarnessError
from harness.filters import Filter, register_filter


@register_filter("regex")
class RegexFilter(Filter):
    def __init__(self, regex_pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0,
                 fallback: str = "[invalid]", **options: Any) -> None:
        super().__init__(**options)
        try:
            self.regex = re.compile(regex_pattern)
        except re.error as err:
            raise ValueError(f"regex_pattern {regex_pattern!r} does not compile: {err}") from None
        self.group_select = group_select
        self.fallback = fallback

    def extract(self, resp: Any) -> str:
        if not isinstance(resp, str):
            resp = ""
        match = self.regex.findall(resp)
        if not match:
            return self.fallback
        match = match[self.group_select]
        if isinstance(match, tuple):
            match = [m for m in match if m]
            match = match[0] if match else self.fallback
        return match.strip()

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[self.extract(r) for r in rs] for rs in resps]


@register_filter("remove_whitespace")
class RemoveWhitespace(Filter):
    """Leading and trailing whitespace removed."""

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        return [[r.strip() for r in rs] for rs in resps]


@lru_cache(maxsize=1)
def _punctuation_table() -> dict[int, None]:
    return dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))


@register_filter("multi_choice_regex")
class MultiChoiceRegex(RegexFilter):
    """A letter answer "(A)".."(Z)" from `regex_pattern`, else from a choice's text found in the
    response (after the ignore options), else from ": X" with a bare letter. Needs the
    document's `choices` field."""

    def __init__(self, regex_pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0,
                 fallback: str = "[invalid]", ignore_case: bool = False, ignore_punctuation: bool = False,
                 regexes_to_ignore: list[str] | None = None, **options: Any) -> None:
        super().__init__(regex_pattern, group_select, fallback, **options)
        self.ignore_case, self.ignore_punctuation = ignore_case, ignore_punctuation
        self.regexes_to_ignore = regexes_to_ignore

    def _find(self, regex: re.Pattern, resp: Any, convert: dict[str, str]) -> Any:
        if not isinstance(resp, str):
            resp = ""
        match = regex.findall(resp)
        if match:
            match = match[self.group_select]
            if isinstance(match, tuple):
                non_empty = [m for m in match if m]
                if not non_empty:
                    return ""
                match = non_empty[0]
            match = match.strip()
            if match and match in convert:
                match = convert[match]
        return match

    def _ignore(self, text: str) -> str:
        for pattern in self.regexes_to_ignore or []:
            text = re.sub(pattern, "", text)
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(_punctuation_table())
        return text

    def apply(self, resps: Sequence[Any], docs: Sequence[dict[str, Any]]) -> list[Any]:
        out = []
        for rs, doc in zip(resps, docs, strict=True):
            if "choices" not in doc:
                raise HarnessError("filter multi_choice_regex needs a 'choices' field in every document")
            choice_to_alpha, texts, letters = {}, [], []
            for k, choice in enumerate(doc["choices"]):
                letter = chr(ord("A") + k)
                m = self._ignore(choice.strip())
                texts.append(re.escape(m))
                choice_to_alpha[m] = f"({letter})"
                letters.append(letter)
            # longest first: alternation is leftmost-wins, so a prefix choice must not shadow a longer one
            by_text = re.compile("|".join(sorted(texts, key=len, reverse=True)))
            by_letter = re.compile(rf":[\s]*({'|'.join(letters)})")
            letter_to_target = {x: f"({x})" for x in letters}
            values = []
            for resp in rs:
                match = self._find(self.regex, resp, {})
                if not match:
                    match = self._find(by_text, self._ignore(resp), choice_to_alpha)
                    if not match:
                        match = self._find(by_letter, resp, letter_to_target)
                values.append(match or self.fallback)
            out.append(values)
        return out
