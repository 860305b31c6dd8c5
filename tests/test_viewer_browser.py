"""The sample viewer in headless Chromium (driven as tests/test_html_browser.py does): search, filter
by a metric's range, sort by score, open a sample, diff two runs with the most changed first,
page through 10,000 samples, no unescaped model output, and a screenshot of the first screen."""

from __future__ import annotations

import base64
import io
import json

import pytest

from harness.report.viewer import build_site
from tests.test_html_browser import CHROMIUM, Chromium
from tests.test_report_data import FakeModel, write_results

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)")
HOSTILE = "</pre><script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> <b>bold</b>"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    chrome.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1,
                                                        "mobile": False})
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer")
    base = write_results(folder / "runs", "base", [FakeModel("hf:m", quality=0.8)])
    cand = write_results(folder / "runs", "cand", [FakeModel("hf:m", quality=0.3, seed=1, outputs={0: HOSTILE})])
    index = build_site([base, cand], folder / "site", title="Regression hunt")
    return index, folder / "runs"


def records(runs, name: str, task: str) -> list[dict]:
    path = runs / name / f"hf-m__{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def choose(browser: Chromium, select: str, value: str) -> None:
    """Pick an option as a user does: the value changes and a change event fires."""
    browser.evaluate(f"(() => {{ const s = document.querySelector({json.dumps(select)}); s.value = {json.dumps(value)};"
                     " s.dispatchEvent(new Event('change')); })()")


def type_into(browser: Chromium, selector: str, text: str) -> None:
    browser.click(selector)
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
    browser.send("Input.insertText", {"text": text})


def set_id(browser: Chromium, model_file: str, task: str) -> str:
    return browser.evaluate(f"JSON.parse(document.getElementById('manifest').textContent).sets.filter(s => "
                            f"s.task === {json.dumps(task)} && s.model.includes({json.dumps(model_file)}))[0].id")


def status(browser: Chromium) -> str:
    return browser.evaluate("document.getElementById('status').textContent")


def column(browser: Chromium, i: int) -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll('#samples tbody tr')).map(r => r.cells[{i}].textContent)")


def open_site(browser: Chromium, site, task: str = "mc_colors") -> None:
    browser.open(site[0].as_uri())
    choose(browser, "#task", task)
    assert browser.wait_for("document.querySelectorAll('#samples tbody tr').length > 0")


def test_first_screen_screenshot(browser, site):
    from PIL import Image

    open_site(browser, site)
    assert status(browser) == "40 of 40 samples"
    shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"])
    image = Image.open(io.BytesIO(shot)).convert("L")
    assert image.size == (1280, 800)
    # what the first screen must show, and where: the controls, the count, the header and >= 8 sample rows
    boxes = browser.evaluate("['#controls', '#status', '#samples thead tr', '#samples tbody tr:nth-child(8)']"
                             ".map(s => { const r = document.querySelector(s).getBoundingClientRect();"
                             " return [r.top, r.bottom, r.width]; })")
    assert all(0 <= top < bottom <= 800 and width > 300 for top, bottom, width in boxes)
    band = image.crop((0, int(boxes[3][0]), 1280, int(boxes[3][1])))  # the 8th row is drawn, not blank
    assert sum(1 for count in band.histogram() if count) > 10
    heads = browser.evaluate("Array.from(document.querySelectorAll('#samples thead th')).map(t => t.textContent)")
    assert heads == ["document", "acc", "prompt", "output", "target"]


def test_search_filter_and_sort_by_score(browser, site):
    open_site(browser, site, "translate_toy")
    rows = records(site[1], "base", "translate_toy")
    word = rows[3]["output"].split()[2]
    type_into(browser, "#search", word)
    expected = sum(1 for r in rows if word in "\n".join([r["doc_id"], r["prompt"], r["output"], r["target"]]).lower())
    assert browser.wait_for(f"document.getElementById('status').textContent === '{expected} of 40 samples'")
    type_into(browser, "#search", "")
    choose(browser, "#metric", "rougeL")
    type_into(browser, "#min", "0.5")
    high = sum(1 for r in rows if r["scores"]["rougeL"] >= 0.5)
    assert browser.wait_for(f"document.getElementById('status').textContent === '{high} of 40 samples'")
    assert all(float(v) >= 0.5 for v in column(browser, 1))
    type_into(browser, "#min", "")
    choose(browser, "#sort", "desc")
    values = [float(v) for v in column(browser, 1)]
    assert values == sorted(values, reverse=True) and len(values) == 40
    choose(browser, "#sort", "asc")
    values = [float(v) for v in column(browser, 1)]
    assert values == sorted(values)


def test_two_runs_most_changed_first_with_a_word_diff_and_escaped_output(browser, site):
    open_site(browser, site, "translate_toy")
    choose(browser, "#run-a", set_id(browser, "(base)", "translate_toy"))
    choose(browser, "#run-b", set_id(browser, "(cand)", "translate_toy"))
    assert browser.evaluate("document.getElementById('sort').value") == "change"
    choose(browser, "#metric", "rougeL")
    assert browser.wait_for("document.getElementById('status').textContent.endsWith('paired by document id')")
    changes = [abs(float(v)) if v != "—" else 0.0 for v in column(browser, 3)]
    assert changes == sorted(changes, reverse=True) and changes[0] > 0
    base = {r["doc_id"]: r["scores"]["rougeL"] for r in records(site[1], "base", "translate_toy")}
    cand = {r["doc_id"]: r["scores"]["rougeL"] for r in records(site[1], "cand", "translate_toy")}
    assert changes[0] == pytest.approx(max(abs(cand[d] - base[d]) for d in base), abs=1e-3)
    browser.click("#samples tbody tr:first-child")
    assert browser.wait_for("document.getElementById('detail').open")
    diff = browser.evaluate("(() => { const d = document.querySelector('#detail pre.diff');"
                            " return [d.querySelectorAll('ins').length + d.querySelectorAll('del').length, d.textContent]; })()")
    assert diff[0] > 0
    browser.evaluate("document.getElementById('detail').close()")
    type_into(browser, "#search", "pwned")  # the hostile output, found as text
    assert browser.wait_for("document.getElementById('status').textContent.startsWith('1 of 40')")
    browser.click("#samples tbody tr:first-child")
    assert browser.wait_for("document.getElementById('detail').open")
    assert HOSTILE in browser.evaluate("document.getElementById('detail').textContent")
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('img, b').length") == 0
    # the only scripts: the page's own, its manifest, and the sample files it loaded from data/
    assert browser.evaluate("Array.from(document.scripts).every(s => !s.src || "
                            "/^file:\\/\\/.*\\/site\\/data\\/[^/]+\\.js$/.test(s.src))")


def test_ten_thousand_samples_are_paged(browser, tmp_path):
    folder = tmp_path / "runs"
    (folder / "big").mkdir(parents=True)
    lines = [json.dumps({"doc_id": f"d{i:05d}", "prompt": f"prompt {i}", "output": f"answer number {i}",
                         "target": f"answer {i}", "scores": {"exact_match": float(i % 3 == 0)}}) for i in range(10_000)]
    (folder / "big" / "m__big.jsonl").write_text("\n".join(lines) + "\n")
    results = folder / "big.json"
    results.write_text(json.dumps({"schema_version": 1, "kind": "evaluation", "run_id": "big", "finished": "2026-01-01", "evaluations": [{
        "model": {"name": "m", "backend": "hf", "spec": "hf:m"}, "groups": {},
        "tasks": {"big": {"config": {"task": "big", "output_type": "generate_until"}, "n_samples": 10_000,
                          "samples_file": "big/m__big.jsonl",
                          "metrics": {"exact_match": {"value": 0.3334, "n": 10_000}}}}}]}))
    browser.open(build_site([results], tmp_path / "site").as_uri())
    assert browser.wait_for("document.getElementById('status').textContent === '10000 of 10000 samples'", timeout=60)
    assert browser.evaluate("document.querySelectorAll('#samples tbody tr').length") == 50
    assert browser.evaluate("document.getElementById('page').textContent") == "page 1 of 200"
    browser.click("#next")
    assert browser.wait_for("document.getElementById('page').textContent === 'page 2 of 200'")
    assert column(browser, 0)[0] == "d00050"
    type_into(browser, "#min", "1")
    assert browser.wait_for("document.getElementById('status').textContent === '3334 of 10000 samples'", timeout=30)
    assert browser.evaluate("document.getElementById('page').textContent") == "page 1 of 67"
