"""Whether two task records can be compared, and if not, why: data and prompt hashes, explained.

A differing `data_hash` means different documents; a differing `prompt_hash` means different
requests: either the rendered prompts differ (template, few-shot, chat template) or they are the
same and the request settings differ (generation_kwargs such as max_gen_toks or temperature).
The reason names the differing task-config keys, so the user sees what changed.
"""

from __future__ import annotations

from typing import Any

from harness.report.collect import ModelEntry
from harness.report.html import read_samples


def incompatibilities(b: ModelEntry, c: ModelEntry, task: str) -> list[str]:
    """Human-readable reasons why `task` of baseline `b` and candidate `c` should not be compared."""
    tb, tc = b.tasks[task], c.tasks[task]
    reasons = []
    changed = config_diff(tb.config or {}, tc.config or {})
    if tb.data_hash != tc.data_hash:
        why = f"the documents differ (data_hash {_short(tb.data_hash)} vs {_short(tc.data_hash)}"
        if tb.n_samples != tc.n_samples:
            why += f"; {tb.n_samples} vs {tc.n_samples} documents: was --limit different?"
        data_keys = [d for d in changed if d.split(":")[0].split(".")[0] in _DATA_KEYS]
        reasons.append(why + (f"; changed: {', '.join(data_keys)}" if data_keys else "") + ")")
    if tb.prompt_hash != tc.prompt_hash:
        reasons.append(f"the requests differ (prompt_hash {_short(tb.prompt_hash)} vs "
                       f"{_short(tc.prompt_hash)}): {_prompt_reason(b, c, task, changed)}")
    return reasons


_DATA_KEYS = {"dataset_path", "dataset_name", "dataset_kwargs", "test_split", "validation_split", "doc_to_target"}


def _prompt_reason(b: ModelEntry, c: ModelEntry, task: str, changed: list[str]) -> str:
    parts = []
    same = same_prompts(b, c, task)
    if same is True:
        parts.append("the rendered prompts are identical, the request settings differ")
    elif isinstance(same, str):
        parts.append(f"the rendered prompts differ (first at document {same})")
    tb, tc = b.tasks[task], c.tasks[task]
    if tb.chat_template != tc.chat_template:
        parts.append(f"chat template applied: {_yes(tb.chat_template)} vs {_yes(tc.chat_template)}")
    elif tb.chat_template and b.model.spec != c.model.spec:
        parts.append(f"each model's own chat template ({b.label} vs {c.label})")
    if tb.template_hash != tc.template_hash and not changed:
        parts.append("the template hash differs")
    if changed:
        shown = changed[:6]
        parts.append("changed: " + ", ".join(shown) + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    return "; ".join(parts) or "the task configs look the same (a different harness version?)"


def same_prompts(b: ModelEntry, c: ModelEntry, task: str) -> bool | str | None:
    """True if every document's prompt is the same, the first differing doc id if not, None if unknown."""
    pb, pc = b.samples_path(task), c.samples_path(task)
    if pb is None or pc is None or not pb.exists() or not pc.exists():
        return None
    rb, rc = read_samples(pb), read_samples(pc)
    if len(rb) != len(rc):
        return None
    for x, y in zip(rb, rc):
        if x.get("prompt") != y.get("prompt"):
            return str(x.get("doc_id"))
    return True


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """'key.sub: old → new' for every leaf that differs between two task configs."""
    out = []
    for key in dict.fromkeys([*a, *b]):
        if key in _IGNORED:
            continue
        name = f"{prefix}{key}"
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_diff(x, y, name + ".")
        elif x != y:
            out.append(f"{name}: {_show(x)} → {_show(y)}")
    return out


_IGNORED = {"source_file"}  # where the task file lives says nothing about the requests


def _show(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _short(h: Any) -> str:
    return "none" if not h else str(h)[:10]


def _yes(x: Any) -> str:
    return "yes" if x else "no"
