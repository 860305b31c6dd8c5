"""The HTML leaderboard in a real browser: headless Chromium (Debian's `chromium`), driven over the
DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ending in NUL on fds 3 and 4),
so the test needs nothing beyond the standard library and installs nothing.

It clicks a column header with real mouse events and checks the row order, checks that a model
output containing `<script>` shows as text and never runs, and follows a value to its samples.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness.report.collect import columns, load_entries
from harness.report.leaderboard import render_leaderboard
from tests.test_report_data import FakeModel, write_results

CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--remote-debugging-pipe"]

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)")


class Chromium:
    """Just enough of the DevTools protocol: commands on one page session, and waiting for events."""

    def __init__(self, profile: Path):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4; move our ends out of the way first.
        to_browser, from_browser = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser))

        def wire() -> None:
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=wire, stdin=subprocess.DEVNULL,  # noqa: PLW1509 (no threads here)
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_browser, from_browser):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError("no answer from chromium")
            import select

            ready, _, _ = select.select([self._read], [], [], 0.5)
            if ready:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, *, session: bool = True, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._message(max(0.1, deadline - time.monotonic())))

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the middle of the element."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._read)
        os.close(self._write)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    hostile = "</pre><script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
    path = write_results(folder / "runs", "board", [
        FakeModel("hf:mid", n_params=360_000_000, quality=0.7),
        FakeModel("hf:best", n_params=1_700_000_000, quality=0.95),
        FakeModel("hf:<b>worst</b>", n_params=135_000_000, quality=0.3, outputs={0: hostile}),
    ])
    entries = load_entries([path])
    html_path = folder / "leaderboard.html"
    html_path.write_text(render_leaderboard(entries, columns(entries), "html", link_base=folder), encoding="utf-8")
    return html_path


def column_texts(browser: Chromium, col: int, table: str = "leaderboard") -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll('#{table} tbody tr'))"
                            f".map(r => r.cells[{col}].childNodes[0].textContent.trim())")


def header_index(browser: Chromium, title: str, table: str = "leaderboard") -> int:
    titles = browser.evaluate(f"Array.from(document.querySelectorAll('#{table} thead th')).map(t => t.textContent)")
    return titles.index(title)


def test_click_header_sorts(browser, page):
    browser.open(page.as_uri())
    assert column_texts(browser, 0) == ["hf:best", "hf:mid", "hf:<b>worst</b>"]  # ranked by mean win rate
    col = header_index(browser, "params")
    browser.click(f"#leaderboard thead th:nth-child({col + 1}) button")
    assert column_texts(browser, col) == ["1.7B", "360M", "135M"]  # a numeric column sorts descending first
    assert browser.evaluate(f"document.querySelectorAll('#leaderboard thead th')[{col}].getAttribute('aria-sort')") \
        == "descending"
    browser.click(f"#leaderboard thead th:nth-child({col + 1}) button")
    assert column_texts(browser, col) == ["135M", "360M", "1.7B"]
    bpb = header_index(browser, "lm_toy\nbits_per_byte ↓")  # the primary metric of a perplexity task
    browser.click(f"#leaderboard thead th:nth-child({bpb + 1}) button")  # lower is better: ascending first
    values = [float(v) for v in column_texts(browser, bpb)]
    assert values == sorted(values)
    model = header_index(browser, "model")
    browser.click(f"#leaderboard thead th:nth-child({model + 1}) button")
    assert column_texts(browser, model) == sorted(["hf:best", "hf:mid", "hf:<b>worst</b>"], key=str.lower)


def test_first_screen_is_compact_and_details_open_on_click(browser, page):
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    browser.open(page.as_uri())
    heads = browser.evaluate("Array.from(document.querySelectorAll('#leaderboard thead th')).map(t => t.textContent)")
    assert heads == ["model", "rank", "params", "mean\nwin rate", "mc_colors\nacc ↑",
                     "translate_toy\nbleu ↑", "lm_toy\nbits_per_byte ↓"]  # one primary score per task
    assert browser.evaluate("document.querySelector('#leaderboard').getBoundingClientRect().right") <= 1280
    assert browser.evaluate("document.querySelector('#leaderboard tbody td:nth-child(5) .ci').textContent").count("–") == 1
    assert not browser.evaluate("document.querySelector('#details').checkVisibility()")
    browser.click("#all-metrics > summary")
    assert browser.wait_for("document.querySelector('#details').checkVisibility()")
    titles = browser.evaluate("Array.from(document.querySelectorAll('#details thead th')).map(t => t.textContent)")
    assert "lm_toy / word_perplexity ↓" in titles and len(titles) == 6 + 8  # every metric in the details
    for table in ("leaderboard", "details"):  # the header row and the model column stay in view
        assert browser.evaluate(f"getComputedStyle(document.querySelector('#{table} thead th')).position") == "sticky"
        assert browser.evaluate(f"getComputedStyle(document.querySelector('#{table} tbody td')).position") == "sticky"
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 600, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    shifted = browser.evaluate("(() => { const box = document.querySelector('#details').parentElement;"
                               " const cell = document.querySelector('#details tbody td');"
                               " const before = cell.getBoundingClientRect().left; box.scrollLeft = 400;"
                               " return [box.scrollLeft, cell.getBoundingClientRect().left - before]; })()")
    assert shifted[0] > 0 and shifted[1] == 0
    browser.send("Emulation.clearDeviceMetricsOverride")


def test_page_works_offline(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # no CDN, no remote fonts or scripts
    assert "@import" not in text and "url(" not in text


def test_outputs_and_names_are_text_not_markup(browser, page):
    browser.open(page.as_uri())
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('script').length") == 1  # only the page's own
    assert browser.evaluate("document.querySelectorAll('b, img').length") == 0
    text = browser.evaluate("document.body.innerText")
    assert "hf:<b>worst</b>" in text
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert "<script>window.__pwned = 1</script>" in browser.evaluate("document.body.innerText")


def test_value_links_to_its_samples(browser, page):
    browser.open(page.as_uri())
    browser.click("#leaderboard tbody tr:first-child td.best a")
    opened = browser.wait_for("Array.from(document.querySelectorAll('details')).filter(d => d.open).map(d => d.id)")
    assert len(opened) == 1 and opened[0].startswith("samples-hf_best-")
    href = browser.evaluate(f"document.getElementById({json.dumps(opened[0])}).querySelector('summary a').href")
    assert href.startswith("file://") and Path(href[len("file://"):]).exists()
