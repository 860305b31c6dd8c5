"""Credentials out of everything the harness records: the command line in results files, model
specs and sources, error messages and log lines all pass through `redact` before they are written.

What counts as a credential: the user part of a URL (`https://user:KEY@host`), the value of a
query parameter or option named like a secret (`api_key=`, `token=`, `--api-key X`), an
`Authorization: Bearer` value, and tokens shaped like the common providers' keys (`sk-...`,
`hf_...`). Each is replaced by `***`; the rest of the text is kept, so a recorded command still
says which server and which options were used.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

MASK = "***"
SECRET_NAMES = r"(?:api[_-]?key|apikey|key|token|access[_-]?token|auth|password|passwd|secret|signature|sig)"
_PATTERNS = [
    # scheme://user:password@host or scheme://token@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@"), rf"\1{MASK}@"),
    # ?api_key=...&  name=value in a query string or an option list
    (re.compile(rf"([?&;]{SECRET_NAMES}=)[^&#\s]*", re.IGNORECASE), rf"\1{MASK}"),
    # --api-key=VALUE
    (re.compile(rf"(--(?:\w+[-_])*{SECRET_NAMES}=)\S+", re.IGNORECASE), rf"\1{MASK}"),
    (re.compile(r"(\bBearer\s+)[^\s\"']+", re.IGNORECASE), rf"\1{MASK}"),
    # provider key shapes, each with its own separator (hf_, not the hf- of a file name), at
    # least 20 characters, so task and model file names are not taken for keys
    (re.compile(r"\b(sk-|hf_|ghp_|gho_|xox[abp]-)[A-Za-z0-9_-]{20,}"), rf"\1{MASK}"),
]
_SECRET_FLAG = re.compile(rf"^--(?:\w+[-_])*{SECRET_NAMES}$", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every credential it contains replaced by ***."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with credentials masked, including the value after a flag such as --api-key."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        hide_next = bool(_SECRET_FLAG.match(arg))
        out.append(redact(arg))
    return out


def redact_value(value: Any) -> Any:
    """Strings anywhere inside a JSON-like value, redacted (dict keys are kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (install it on the handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
