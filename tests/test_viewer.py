"""`harness view`: the static sample site's files (no browser; tests/test_viewer_browser.py drives it)."""

from __future__ import annotations

import json
import re

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.viewer import build_site, sample_row
from tests.test_report_data import FakeModel, write_results


def _data(path):
    text = path.read_text(encoding="utf-8")
    match = re.fullmatch(r"window\.harnessData\((\".*?\"),(.*)\);\n", text, re.S)
    assert match, text[:200]
    return json.loads(match.group(1)), json.loads(match.group(2))


def test_site_has_every_sample_of_every_task_and_no_remote_resources(tmp_path):
    hostile = "</script><script>window.__pwned = 1</script>\u2028"
    results = write_results(tmp_path / "runs", "run", [FakeModel("hf:a", outputs={0: hostile}), FakeModel("hf:b")])
    index = build_site([results], tmp_path / "site", title="Toy <samples>")
    page = index.read_text(encoding="utf-8")
    assert "<title>Toy &lt;samples&gt;</title>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "url(" not in page
    manifest = json.loads(re.search(r'<script type="application/json" id="manifest">(.*?)</script>', page, re.S).group(1))
    sets = {(s["model"], s["task"]): s for s in manifest["sets"]}
    assert set(sets) == {(m, t) for m in ("hf:a", "hf:b") for t in ("mc_colors", "translate_toy", "lm_toy")}
    assert sets[("hf:a", "lm_toy")]["primary"] == "bits_per_byte" and sets[("hf:a", "mc_colors")]["primary"] == "acc"
    assert sets[("hf:a", "mc_colors")]["higher"] == {"acc": True, "acc_norm": True}
    sid, rows = _data(tmp_path / "site" / "data" / f"{sets[('hf:a', 'translate_toy')]['id']}.js")
    assert sid == sets[("hf:a", "translate_toy")]["id"] and len(rows) == 40  # every sample, not the first 25
    assert rows[0]["output"] == hostile
    raw = (tmp_path / "site" / "data" / f"{sid}.js").read_text(encoding="utf-8")
    assert "</script>" not in raw and "\u2028" not in raw  # cannot end a script element or a JS string


def test_multiple_choice_rows_show_the_picked_answer_and_the_gold_one():
    row = sample_row({"doc_id": "q1", "prompt": "Q?", "target": 2, "choices": ["a", "b", "c"],
                      "responses": [[-3.0, False], [-1.0, True], [-2.0, False]], "scores": {"acc": 0.0, "bad": None}}, 0)
    assert (row["output"], row["target"], row["scores"]) == ("b", "c", {"acc": 0.0})


def test_cli_view_and_errors(tmp_path, capsys):
    results = write_results(tmp_path / "runs", "run", [FakeModel("hf:a")])
    assert main(["view", str(results), "-o", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "index.html")
    data = json.loads(results.read_text())
    for task in data["evaluations"][0]["tasks"].values():
        task["samples_file"] = "gone/nothing.jsonl"
    results.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="no per-sample files"):
        build_site([results], tmp_path / "none")
    assert main(["view", str(results), "-o", str(tmp_path / "none")]) == 2
