"""A static, self-contained HTML page: sortable tables, CIs, and per-sample outputs.

No external CSS, JavaScript or fonts. Every text that comes from a results file (model names,
task names, prompts, outputs) goes through `html.escape`, so an output containing `<script>`
shows as text. Per-sample outputs are embedded (the first `max_samples` per model and task) and
the JSONL file is linked.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.collect import ModelEntry

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:1500px;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin-top:2rem}.meta{color:#666;margin:.2rem 0}
table{border-collapse:separate;border-spacing:0;margin:.6rem 0}th,td{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:right;vertical-align:top;background:#fff}
th{background:#f5f5f7;position:sticky;top:0;z-index:2;max-width:9rem;white-space:pre-line;vertical-align:bottom}
.ci.variants{font-size:.75em}table.compact td,table.compact th{padding:.3rem .4rem}table.compact td{white-space:nowrap}td.text,th.text{text-align:left}
table.sticky-first td:first-child,table.sticky-first th:first-child{position:sticky;left:0;z-index:1;border-right:1px solid #ddd}
table.sticky-first th:first-child{z-index:3}
th button{all:unset;cursor:pointer;font-weight:600}th button:focus-visible{outline:2px solid #06c}
th[aria-sort=ascending] button::after{content:" ▲"}th[aria-sort=descending] button::after{content:" ▼"}
th.unranked{color:#777;font-style:italic}
td.best{font-weight:700;background:#e8f5e9}.ci{color:#666;font-size:.8em;display:block;font-weight:400}.missing{color:#aaa}
details{margin:.4rem 0}summary{cursor:pointer}pre{white-space:pre-wrap;margin:0;max-width:40rem;font-size:.85em}
table.samples td,table.samples th{text-align:left}.scroll{overflow:auto;max-height:85vh}td.text{white-space:nowrap}
.note{color:#444;max-width:60rem}
"""

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var current = th.getAttribute("aria-sort");
      var dir = current === "none" || !current ? (th.dataset.first || "ascending")
              : (current === "ascending" ? "descending" : "ascending");
      Array.prototype.forEach.call(heads, function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", dir);
      var numeric = th.dataset.type === "number", body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) { var c = row.cells[col]; return c.dataset.sort !== undefined ? c.dataset.sort : c.textContent.trim(); }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }  /* missing cells last */
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return dir === "ascending" ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
function openTarget() {
  var el = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (el && el.tagName === "DETAILS") { el.open = true; }
}
window.addEventListener("hashchange", openTarget); openTarget();
"""


@dataclass
class HtmlCell:
    """One table cell: shown text, the key it sorts by ('' = missing), and decorations."""

    text: str
    sort: str | float | None = None
    ci: str = ""
    best: bool = False
    href: str | None = None
    text_align: bool = False


@dataclass
class HtmlColumn:
    title: str
    numeric: bool = True
    first: str = "descending"  # the direction of the first click
    note: str = ""  # a tooltip (why a column is not ranked, say)
    classes: str = ""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def anchor_id(*parts: str) -> str:
    """A readable id for a (model, task) samples block; the hash keeps it unique after slugging."""
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:6]
    return "samples-" + "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts) + "-" + digest


def sortable_table(columns: Sequence[HtmlColumn], rows: Sequence[Sequence[HtmlCell]], table_id: str = "table",
                   *, sticky_first: bool = False, compact: bool = False) -> str:
    """A table sorted by clicking its headers; the header row (and the first column) stay in view.
    A newline in a column title breaks the header line there."""
    table_class = " ".join(["sortable", *(["sticky-first"] if sticky_first else []), *(["compact"] if compact else [])])
    out = [f'<div class="scroll"><table class="{table_class}" id="{esc(table_id)}"><thead><tr>']
    for c in columns:
        classes = " ".join(x for x in ("" if c.numeric else "text", c.classes) if x)
        cls = f' class="{classes}"' if classes else ""
        tip = f' title="{esc(c.note)}"' if c.note else ""
        out.append(f'<th{cls}{tip} data-type="{"number" if c.numeric else "text"}" data-first="{c.first}" '
                   f'aria-sort="none"><button type="button">{_breakable(c.title)}</button></th>')
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(_td(cell) for cell in row) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _breakable(title: str) -> str:
    """Escaped, with a line-break opportunity after each underscore (long task names in narrow headers)."""
    return esc(title).replace("_", "_<wbr>")


def _td(cell: HtmlCell) -> str:
    classes = [c for c, on in (("best", cell.best), ("text", cell.text_align), ("missing", cell.text == "—")) if on]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    sort = "" if cell.sort is None else (repr(float(cell.sort)) if isinstance(cell.sort, (int, float)) else str(cell.sort))
    body = esc(cell.text)
    if cell.href:
        body = f'<a href="{esc(cell.href)}">{body}</a>'
    if cell.ci:
        body += f'<span class="ci">{esc(cell.ci)}</span>'
    return f'<td data-sort="{esc(sort)}"{attrs}>{body}</td>'


def page(title: str, sections: Sequence[str], subtitle: str = "") -> str:
    meta = f'<p class="meta">{esc(subtitle)}</p>' if subtitle else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>{meta}{''.join(sections)}<script>{SORT_JS}</script></body></html>\n")


def samples_section(entries: Sequence[ModelEntry], tasks: Sequence[str], *, max_samples: int = 25,
                    link_base: Path | None = None) -> str:
    """Collapsed per-(model, task) blocks of per-sample outputs, each with its anchor and JSONL link."""
    out = ['<h2 id="samples">Per-sample outputs</h2>']
    for e in entries:
        for task in tasks:
            if task not in e.tasks:
                continue
            path = e.samples_path(task)
            records = read_samples(path, max_samples + 1) if path else []
            shown = records[:max_samples]
            n_total = e.tasks[task].n_samples or len(records)
            link = ""
            if path is not None:
                href = _relative(path, link_base)
                link = f' · <a href="{esc(href)}">JSONL</a>' if path.exists() else f" · {esc(href)} (missing)"
            note = f"{len(shown)} of {n_total} samples" if shown else "no per-sample file"
            out.append(f'<details id="{anchor_id(e.label, task)}"><summary>{esc(e.label)} — {esc(task)} '
                       f"({note}){link}</summary>")
            if shown:
                out.append(_samples_table(shown))
            out.append("</details>")
    return "".join(out)


def _samples_table(records: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("doc", "prompt", "output", "target", "scores"))
    rows = [f'<table class="samples"><thead><tr>{head}</tr></thead><tbody>']
    for r in records:
        output = r.get("output")
        if output is None and r.get("responses") is not None:
            output = json.dumps(r["responses"], ensure_ascii=False)
        scores = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                           for k, v in (r.get("scores") or {}).items())
        rows.append(f"<tr><td>{esc(r.get('doc_id', ''))}</td><td><pre>{esc(_clip(r.get('prompt')))}</pre></td>"
                    f"<td><pre>{esc(_clip(output))}</pre></td><td><pre>{esc(_clip(r.get('target')))}</pre></td>"
                    f"<td>{esc(scores)}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _clip(text: Any, limit: int = 1500) -> str:
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        text = "\n".join(text)  # several references, one per line
    text = "" if text is None else (text if isinstance(text, str) else json.dumps(text, ensure_ascii=False))
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def read_samples(path: Path, limit: int | None = None, *, strict: bool = False) -> list[dict[str, Any]]:
    """The first `limit` records of a per-sample JSONL file. Not strict: what could be read ([] when
    the file is missing). Strict: a HarnessError naming the file and line."""
    records: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    if strict:
                        raise HarnessError(f"{path}: line {lineno} is not JSON ({err.msg}); "
                                           "the per-sample file is damaged, rerun the evaluation") from None
                    return records
                if limit is not None and len(records) >= limit:
                    break
    except OSError as err:
        if strict:
            raise HarnessError(f"{path}: cannot read per-sample file ({err.strerror})") from None
    return records


def _relative(path: Path, base: Path | None) -> str:
    base = base or Path.cwd()
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_uri()
