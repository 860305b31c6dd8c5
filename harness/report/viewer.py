"""`harness view RESULTS... -o DIR`: a static site with every sample of every task.

DIR/index.html opens from disk (file://) with no server and no network: the page, its script and
its styles are one file, and each (model, task) sample set is a script file under DIR/data/
loaded when first shown (a <script src>, which browsers allow from file:// where fetch() is not).
The page searches, filters by a metric's range, sorts by score and pages through the samples (50
a page, so 10,000 samples a task stay quick); with a second run chosen, the samples pair by
document id and the ones whose scores changed most come first, with a word-level diff of the two
outputs. Every text from a results file reaches the page as data and is shown with textContent,
never parsed as HTML.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.collect import ModelEntry, load_entries
from harness.report.html import esc, read_samples
from harness.report.ranking import primary_metric
from harness.report.viewer_assets import VIEWER_CSS, VIEWER_JS

MAX_TEXT = 20_000  # characters of one prompt / output kept in the site (the JSONL keeps everything)


@dataclass
class SampleSet:
    """One (model, task): what the page's menus list; the samples go to DIR/data/<id>.js."""

    id: str
    model: str
    task: str
    n: int
    metrics: list[str]
    higher_is_better: dict[str, bool]
    source: str
    primary: str | None = None  # the metric shown first: the task's primary metric

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "task": self.task, "n": self.n, "metrics": self.metrics,
                "higher": self.higher_is_better, "source": self.source, "primary": self.primary}


def sample_row(record: dict[str, Any], index: int) -> dict[str, Any]:
    """One per-sample record as the page shows it: id, prompt, output, target, numeric scores."""
    choices = record.get("choices")
    output = record.get("output")
    responses = record.get("responses")
    if output is None and isinstance(choices, list) and isinstance(responses, list) and responses:
        try:  # multiple choice: the answer the model's log-likelihoods pick
            best = max(range(len(responses)), key=lambda i: float(responses[i][0]))
            output = str(choices[best]) if best < len(choices) else None
        except (TypeError, ValueError, IndexError):
            output = None
    target = record.get("target")
    if isinstance(target, int) and not isinstance(target, bool) and isinstance(choices, list) and 0 <= target < len(choices):
        target = choices[target]
    scores = {k: float(v) for k, v in (record.get("scores") or {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    return {"doc": str(record.get("doc_id", index)), "prompt": _text(record.get("prompt")), "output": _text(output),
            "target": _text(target), "choices": [str(c) for c in choices] if isinstance(choices, list) else None,
            "scores": scores}


def _text(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, list) and all(isinstance(t, str) for t in x):
        x = "\n".join(x)  # several references, one per line
    text = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text) - MAX_TEXT} more characters)"


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "__".join(parts))[:80]


def collect_sample_sets(entries: Sequence[ModelEntry]) -> list[tuple[SampleSet, list[dict[str, Any]]]]:
    """Every (model, task) with its per-sample records, in the order of the results files."""
    out = []
    used: set[str] = set()
    for e in entries:
        for task, record in e.tasks.items():
            path = e.samples_path(task)
            rows = [sample_row(r, i) for i, r in enumerate(read_samples(path))] if path else []
            metrics = list(dict.fromkeys([*record.metrics, *(k for r in rows for k in r["scores"])]))
            metrics = [m for m in metrics if any(m in r["scores"] for r in rows)]
            higher = {m: record.metrics[m].higher_is_better if m in record.metrics else True for m in metrics}
            sid = base = _slug(e.label, task)
            k = 1
            while sid in used:
                k += 1
                sid = f"{base}-{k}"
            used.add(sid)
            primary = primary_metric([e], task)
            out.append((SampleSet(sid, e.label, task, len(rows), metrics, higher, str(path or ""),
                                  primary if primary in metrics else None), rows))
    return out


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element or a .js file (no '</script>' can close it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def build_site(results: Iterable[str | Path], out_dir: str | Path, title: str = "Samples") -> Path:
    """Write DIR/index.html and DIR/data/*.js for the given results files; returns the index path."""
    entries = load_entries(results)
    sets = collect_sample_sets([e for e in entries if e.tasks])
    if not sets:
        raise HarnessError("the results files have no tasks to show; give results files of `harness run`")
    if not any(s.n for s, _ in sets):
        raise HarnessError("no per-sample files found beside the results files (samples_file); "
                           "keep the run folder next to its results JSON")
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for s, rows in sets:
        (out / "data" / f"{s.id}.js").write_text(f"window.harnessData({_script_json(s.id)},{_script_json(rows)});\n",
                                                 encoding="utf-8")
    manifest = {"title": title, "sets": [s.to_dict() for s, _ in sets]}
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{VIEWER_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p class=\"meta\" id=\"summary\"></p></header>"
            f"{CONTROLS}<main><p id=\"status\" role=\"status\"></p><table id=\"samples\"><thead></thead><tbody></tbody>"
            "</table><nav class=\"pager\"><button type=\"button\" id=\"prev\">← previous</button>"
            "<span id=\"page\"></span><button type=\"button\" id=\"next\">next →</button></nav></main>"
            "<dialog id=\"detail\"><form method=\"dialog\"><button class=\"close\" aria-label=\"close\">×</button></form>"
            "<div id=\"detail-body\"></div></dialog>"
            f"<script type=\"application/json\" id=\"manifest\">{_script_json(manifest)}</script>"
            f"<script>{VIEWER_JS}</script></body></html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


CONTROLS = (
    "<form id=\"controls\" onsubmit=\"return false\">"
    "<label>task <select id=\"task\"></select></label>"
    "<label>run <select id=\"run-a\"></select></label>"
    "<label>against <select id=\"run-b\"></select></label>"
    "<label>search <input id=\"search\" type=\"search\" placeholder=\"prompt, output, target, id\"></label>"
    "<label>metric <select id=\"metric\"></select></label>"
    "<label>from <input id=\"min\" type=\"number\" step=\"any\" size=\"6\"></label>"
    "<label>to <input id=\"max\" type=\"number\" step=\"any\" size=\"6\"></label>"
    "<label>sort <select id=\"sort\"></select></label>"
    "</form>")
