"""Sandboxed Jinja2 templates, few-shot sampling and chat messages.

Templates render in jinja2's SandboxedEnvironment with StrictUndefined: a template can read a
document's fields and use Jinja2's filters, but cannot reach Python internals, and a field that
the document lacks is an error that names it.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import HarnessError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


@lru_cache(maxsize=512)
def _compile(template: str):
    return _ENV.from_string(template)


@lru_cache(maxsize=512)
def _compile_expression(expression: str):
    return _ENV.compile_expression(expression, undefined_to_none=False)


def render(template: str, doc: dict[str, Any], *, where: str) -> str:
    """Render a template over a document's fields; `where` names the task file and key for errors."""
    try:
        return _compile(template).render(**doc)
    except UndefinedError as err:
        raise HarnessError(f"{where}: {_undefined_message(err, doc)}") from None
    except TemplateError as err:
        raise HarnessError(f"{where}: template error: {err}") from None


def render_value(template: Any, doc: dict[str, Any], *, where: str) -> Any:
    """Like `render`, but a template that is one `{{ expression }}` keeps the expression's type
    (a list for doc_to_choice, an int for a gold index); a bare field name reads that field."""
    if not isinstance(template, str):
        return template
    if template in doc:
        return doc[template]
    match = _SINGLE_EXPRESSION.match(template)
    if match and "{{" not in match.group(1) and "{%" not in template:
        try:
            value = _compile_expression(match.group(1).strip())(**doc)
        except UndefinedError as err:
            raise HarnessError(f"{where}: {_undefined_message(err, doc)}") from None
        except TemplateError as err:
            raise HarnessError(f"{where}: template error: {err}") from None
        if hasattr(value, "_undefined_name"):
            raise HarnessError(f"{where}: {_undefined_message(None, doc, value._undefined_name)}")
        return value
    return render(template, doc, where=where)


def _undefined_message(err: Exception | None, doc: dict[str, Any], name: str | None = None) -> str:
    if name is None:
        found = re.search(r"'([^']+)' is undefined", str(err))
        name = found.group(1) if found else str(err)
    fields = ", ".join(sorted(doc)) or "none"
    return f"the template names field {name!r}, which the data lacks (fields: {fields}); fix the template or the data"


def template_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def sample_fewshot(pool: list[dict[str, Any]], k: int, *, seed: int, exclude_id: Any, doc_index: int) -> list[dict[str, Any]]:
    """k examples from the pool, never the document itself, the same for a given seed and document."""
    if k <= 0:
        return []
    rng = random.Random(f"{seed}:{doc_index}")
    candidates = [d for d in pool if exclude_id is None or d.get("id", object()) != exclude_id]
    if len(candidates) < k:
        raise HarnessError(f"num_fewshot is {k} but the few-shot split holds only {len(candidates)} usable documents")
    return rng.sample(candidates, k)


def chat_messages(
    shots: list[tuple[str, str]], question: str, *, system: str | None
) -> list[dict[str, str]]:
    """A conversation: the optional system prompt, each shot as a user/assistant pair, then the question."""
    messages = [{"role": "system", "content": system}] if system else []
    for text, answer in shots:
        messages.append({"role": "user", "content": text})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": question})
    return messages
