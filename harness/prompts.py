"""Sandboxed Jinja2 templates, few-shot sampling and chat messages.

Templates render in jinja2's ImmutableSandboxedEnvironment with StrictUndefined and the filters
lm-evaluation-harness adds (`regex_replace`): a template can read a document's fields, but cannot
reach Python internals, change the document, or produce more than MAX_OUTPUT characters (a huge
literal such as `'x' * 10**8` is refused before it is built). Every error is one line naming the
task file and key.
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
import re
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, UndefinedError
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from harness.errors import HarnessError

MAX_OUTPUT = 4_000_000  # characters one template may produce (or any string/list it builds)
MAX_RANGE_ITEMS = 1_000_000  # range() items per rendering: nested loops cannot spin for hours
_MAX_POWER_BITS = 4096
_RANGE_BUDGET: ContextVar[list[int]] = ContextVar("range_budget", default=[0])  # set per rendering


def _bounded_range(*args: int) -> range:
    items = range(*args)
    budget = _RANGE_BUDGET.get()
    budget[0] -= len(items)
    if budget[0] < 0:
        raise SecurityError(f"range() calls of this template exceed {MAX_RANGE_ITEMS:,} items")
    return items


def regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    """lm-evaluation-harness's `regex_replace` filter: re.sub."""
    return re.sub(pattern, repl, string, count=count)


class _BoundedCodeGenerator(CodeGenerator):
    """Routes `~` concatenation through a size check (jinja2 joins it without one)."""

    def visit_Concat(self, node, frame) -> None:  # noqa: ANN001
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})
    code_generator_class = _BoundedCodeGenerator

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:  # noqa: ANN001
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * math.log2(abs(left)) > _MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is too large")
        if operator == "*" and isinstance(right, int) and hasattr(left, "__len__"):
            left, right = right, left
        if operator == "*" and isinstance(left, int) and hasattr(right, "__len__") and left * len(right) > MAX_OUTPUT:
            raise SecurityError(f"a repetition of {left} x {len(right)} items exceeds {MAX_OUTPUT:,}")
        if operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__") and len(left) + len(right) > MAX_OUTPUT:
            raise SecurityError(f"a concatenation exceeds {MAX_OUTPUT:,} items")
        return super().call_binop(context, operator, left, right)

    def bounded_join(self, parts: tuple[Any, ...]) -> str:
        text = "".join(str(p) for p in parts)
        if len(text) > MAX_OUTPUT:
            raise SecurityError(f"a concatenation exceeds {MAX_OUTPUT:,} characters")
        return text


_ENV = _Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
_ENV.filters["regex_replace"] = regex_replace
_ENV.globals.pop("namespace", None)  # mutable state in a template: not needed by any task file
_ENV.globals["range"] = _bounded_range
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


@lru_cache(maxsize=2048)
def _compile(template: str):
    return _ENV.from_string(template)


@lru_cache(maxsize=512)
def _compile_expression(expression: str):
    return _ENV.compile_expression(expression, undefined_to_none=False)


def render(template: str, doc: dict[str, Any], *, where: str) -> str:
    """Render a template over a document's fields; `where` names the task file and key for errors."""
    token = _RANGE_BUDGET.set([MAX_RANGE_ITEMS])
    try:
        compiled = _compile(template)
        parts, size = [], 0
        for chunk in compiled.generate(**doc):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the output exceeds {MAX_OUTPUT:,} characters")
            parts.append(chunk)
        return "".join(parts)
    except UndefinedError as err:
        raise HarnessError(f"{where}: {_undefined_message(err, doc)}") from None
    except HarnessError:
        raise
    except Exception as err:  # noqa: BLE001 - any template failure (syntax, include, 1/0, limits) is the file's
        raise HarnessError(f"{where}: template error: {_one_line(err)}; fix the template") from None
    finally:
        _RANGE_BUDGET.reset(token)


def apply_template(template: str, doc: dict[str, Any], *, where: str) -> str:
    """lm-evaluation-harness's utils.apply_template, in the sandbox."""
    return render(template, doc, where=where)


def literal(text: str, *, where: str) -> Any:
    """ast.literal_eval of a rendered template (lm-evaluation-harness's doc_to_choice), bounded."""
    if len(text) > MAX_OUTPUT:
        raise HarnessError(f"{where}: the rendered value is too long to read as a list")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise HarnessError(f"{where}: rendered {shown!r}, which is not a list literal; name a list field or write a list") from None


def render_value(template: Any, doc: dict[str, Any], *, where: str) -> Any:
    """Like `render`, but a template that is one `{{ expression }}` keeps the expression's type
    (a list for doc_to_choice, an int for a gold index); a bare field name reads that field."""
    if not isinstance(template, str):
        return template
    if template in doc:
        return doc[template]
    match = _SINGLE_EXPRESSION.match(template)
    if match and "{{" not in match.group(1) and "{%" not in template:
        token = _RANGE_BUDGET.set([MAX_RANGE_ITEMS])
        try:
            value = _compile_expression(match.group(1).strip())(**doc)
        except UndefinedError as err:
            raise HarnessError(f"{where}: {_undefined_message(err, doc)}") from None
        except Exception as err:  # noqa: BLE001
            raise HarnessError(f"{where}: template error: {_one_line(err)}; fix the template") from None
        finally:
            _RANGE_BUDGET.reset(token)
        if hasattr(value, "_undefined_name"):
            raise HarnessError(f"{where}: {_undefined_message(None, doc, value._undefined_name)}")
        return value
    return render(template, doc, where=where)


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


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


class FewshotSampler:
    """lm-evaluation-harness's samplers (api/samplers.py), draw for draw.

    `default` keeps one random.Random(seed) for the whole task and draws `n` documents per
    evaluated document, in document order (`n + 1`, then drops the document itself, when the
    few-shot split is the test split); `first_n` takes the pool in order.
    """

    def __init__(self, pool: list[dict[str, Any]], *, sampler: str, seed: int | None):
        self.pool = pool
        self.sampler = sampler
        self.rnd = random.Random(seed)

    def sample(self, n: int, eval_doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        if self.sampler == "first_n":
            pool = [x for x in self.pool if x != eval_doc] if eval_doc is not None else self.pool
            if n > len(pool):
                raise HarnessError(f"num_fewshot is {n} but the few-shot pool holds only {len(pool)} documents")
            return list(pool[:n])
        if len(self.pool) < n + (1 if eval_doc else 0):
            raise HarnessError(f"num_fewshot is {n} but the few-shot pool holds only {len(self.pool)} documents")
        if not eval_doc:
            return self.rnd.sample(list(self.pool), n)
        res = [x for x in self.rnd.sample(list(self.pool), n + 1) if x != eval_doc][:n]
        if len(res) < n:  # duplicates of the document in the pool (lm-evaluation-harness resamples)
            res = self.rnd.sample([x for x in self.pool if x != eval_doc], n)
        return res


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
