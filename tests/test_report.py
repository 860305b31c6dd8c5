"""`harness report` and `harness leaderboard`: tables in five formats, best marks, ranking, ties, gaps."""

from __future__ import annotations

import csv
import io
import json
import os
import re

import pytest

from harness.cli import main
from harness.report.collect import columns, load_entries
from harness.report.leaderboard import EfficiencyColumn, leaderboard_rows, render_leaderboard, win_rates
from harness.report.report_tables import render_report
from tests.test_report_data import FakeModel, write_results


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    first = write_results(folder, "first", [FakeModel("hf:big", n_params=270_000_000, quality=0.95),
                                            FakeModel("hf:small", quality=0.5)])
    second = write_results(folder, "second", [FakeModel("scratch:small", backend="scratch", quality=0.5,
                                                        tasks=("mc_colors", "lm_toy"))])
    return first, second


def cells(markdown: str, label: str) -> list[str]:
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_markdown_marks_the_best_by_direction_with_cis(files):
    entries = load_entries(files)
    assert [e.label for e in entries] == ["hf:big", "hf:small", "scratch:small"]
    cols = columns(entries)
    md = render_report(entries, cols, "markdown")
    header = md.splitlines()[0]
    assert "mc_colors / acc ↑" in header and "lm_toy / word_perplexity ↓" in header
    i_acc = [c.title for c in cols].index("mc_colors / acc ↑") + 1
    i_ppl = [c.title for c in cols].index("lm_toy / word_perplexity ↓") + 1
    big, small, scratch = cells(md, "hf:big"), cells(md, "hf:small"), cells(md, "scratch:small")
    assert big[i_acc].startswith("**") and not small[i_acc].startswith("**")
    assert big[i_ppl].startswith("**") and not small[i_ppl].startswith("**")  # lower perplexity wins
    assert re.fullmatch(r"\*\*[\d.]+\*\* \[[\d.]+, [\d.]+\]", big[i_acc])
    assert scratch[[c.title for c in cols].index("translate_toy / bleu ↑") + 1] == "—"  # missing cell
    transposed = render_report(entries, cols, "markdown", transpose=True, ci=False)
    assert "| mc_colors | acc ↑ |" in transposed and "[" not in transposed.split("\n\n")[0]


def test_ties_are_all_marked_and_same_specs_get_unique_labels(tmp_path):
    one = write_results(tmp_path, "tie", [FakeModel("hf:a", quality=0.7), FakeModel("hf:b", quality=0.1)])
    two = write_results(tmp_path / "b", "tie", [FakeModel("hf:a", quality=0.7)])  # same answers as in `one`
    entries = load_entries([one, two])
    assert [e.label for e in entries] == ["hf:a (tie)", "hf:b", "hf:a (tie) #2"]
    md = render_report(entries, columns(entries, ["mc_colors"], ["acc"]), "markdown", ci=False)
    assert cells(md, "hf:a (tie)")[1].startswith("**") and cells(md, "hf:a (tie) #2")[1].startswith("**")
    assert not cells(md, "hf:b")[1].startswith("**")


def test_csv_json_latex_and_html(files):
    entries = load_entries(files)
    cols = columns(entries)
    rows = list(csv.DictReader(io.StringIO(render_report(entries, cols, "csv"))))
    assert len(rows) == 3 * (2 + 2) + 2 * 4  # mc and lm for all three, translation for two
    acc = {r["model"]: r for r in rows if r["metric"] == "acc"}
    assert acc["hf:big"]["best"] == "True" and float(acc["hf:big"]["ci_low"]) <= float(acc["hf:big"]["value"])
    data = json.loads(render_report(entries, cols, "json"))
    assert {m["label"] for m in data["models"]} == {"hf:big", "hf:small", "scratch:small"}
    assert len(data["records"]) == len(rows)
    tex = render_report(entries, cols, "latex", transpose=True)
    assert tex.startswith("\\begin{tabular}{llrrr}") and "\\toprule" in tex and "mc\\_colors" in tex
    assert "\\textbf{" in tex and "$\\downarrow$" in tex
    page = render_report(entries, cols, "html")
    assert page.startswith("<!DOCTYPE html>") and 'class="sortable"' in page and "<script src" not in page


def test_hostile_names_are_escaped(tmp_path):
    path = write_results(tmp_path, "x", [FakeModel("hf:a|b<script>alert(1)</script>", quality=0.7,
                                                   outputs={0: "</pre><script>alert(2)</script>"})])
    entries = load_entries([path])
    cols = columns(entries)
    md = render_report(entries, cols, "markdown")
    assert "<script>" not in md and "a\\|b&lt;script&gt;" in md
    page = render_report(entries, cols, "html")
    assert "<script>alert" not in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "<script>" not in render_report(entries, cols, "latex")


def test_win_rates_follow_helm():
    class E:  # a minimal entry: only cell() is used
        def __init__(self, label, value):
            self.label, self.value = label, value

        def cell(self, task, metric):
            from harness.report.collect import Cell

            return None if self.value is None else Cell(self.value, higher_is_better=metric != "ppl")

    from harness.report.collect import Column

    folder_entries = [E("a", 0.9), E("b", 0.5), E("c", 0.5), E("d", None)]
    assert win_rates(folder_entries, Column("t", "acc")) == {"a": 1.0, "b": 0.25, "c": 0.25}
    assert win_rates(folder_entries, Column("t", "ppl", higher_is_better=False)) == {"a": 0.0, "b": 0.75, "c": 0.75}
    assert win_rates(folder_entries[:1], Column("t", "acc")) == {}


def test_leaderboard_ranks_ties_gaps_and_columns(files, tmp_path):
    entries = load_entries(files)
    cols = columns(entries)
    rows = leaderboard_rows(entries, cols)
    assert rows[0].entry.label == "hf:big" and rows[0].rank == "1" and rows[0].mean_win_rate == 1.0
    # ranked on each task's primary metric: acc, bleu (the first metric of a generation task), bits_per_byte
    assert rows[0].mean_normalized == 1.0 and rows[0].covered == 3 and rows[0].n_columns == 3
    by_label = {r.entry.label: r for r in rows}
    assert by_label["scratch:small"].covered == 2  # scratch:small has no translation task
    md = render_leaderboard(entries, cols, "markdown")
    assert md.splitlines()[0] == ("| rank | model | params | mean win rate | mean normalized | mc_colors acc ↑ | "
                                  "translate_toy bleu ↑ | lm_toy bits_per_byte ↓ |")
    assert "| 1 | hf:big | 270M | 1.000 | 1.000 | **" in md
    assert "| scratch | float32 |" in md and "—" in md  # the details table; no translation cells for scratch:small
    twins = load_entries([write_results(tmp_path, "t", [FakeModel("hf:x", quality=0.7)]),
                          write_results(tmp_path / "b", "t", [FakeModel("hf:x", quality=0.7)])])
    rows = leaderboard_rows(twins, columns(twins))  # the same weights, the same numbers: one row
    assert [(r.rank, [v.label for v in r.group.variants]) for r in rows] == [("1", ["hf:x (t)", "hf:x (t) #2"])]


def test_efficiency_columns_hook(files):
    entries = load_entries(files)
    entries[0].efficiency = {"tokens_per_second": 123.4, "peak_memory_mb": 512}
    eff = [EfficiencyColumn("tokens_per_second", "tokens/s"), EfficiencyColumn("peak_memory_mb", "memory MB", False)]
    md = render_leaderboard(entries, columns(entries), "markdown", efficiency=eff, details=False)
    assert "| tokens/s | memory MB |" in md and "123.4" in md
    records = json.loads(render_leaderboard(entries, columns(entries), "json", efficiency=eff))
    assert records[0]["tokens_per_second"] == 123.4 and records[1]["peak_memory_mb"] is None


def test_cli_report_and_leaderboard(files, tmp_path, capsys):
    assert main(["report", *map(str, files), "--tasks", "mc_*", "--metrics", "acc"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| model | mc_colors / acc ↑ |"
    for suffix, marker in ((".csv", "model,spec"), (".tex", "\\begin{tabular}"), (".json", '"records"'),
                           (".html", "<!DOCTYPE html>"), (".md", "| model |")):
        target = tmp_path / f"r{suffix}"
        assert main(["report", *map(str, files), "-o", str(target)]) == 0
        assert marker in target.read_text()
    lb = tmp_path / "site" / "leaderboard.html"
    assert main(["leaderboard", *map(str, files), "-o", str(lb), "--title", "Toy board"]) == 0
    page = lb.read_text()
    samples = os.path.relpath(files[0].parent / "first" / "hf-big__mc_colors.jsonl", lb.parent)
    assert "<title>Toy board</title>" in page and f'href="{samples}"' in page
    assert main(["leaderboard", *map(str, files), "--format", "csv", "--no-details"]) == 0
    assert capsys.readouterr().out.startswith("rank,model,mean_win_rate,mean_normalized_score")


@pytest.mark.parametrize("args, message", [
    (["report", "/no/such.json"], "cannot read results file"),
    (["report", "{files}", "--tasks", "nope"], "no (task, metric) in the results matches nope"),
    (["leaderboard", "{bad}"], "not a harness results file"),
])
def test_cli_errors_are_one_line(files, tmp_path, capsys, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    args = [a.format(files=files[0], bad=bad) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_benchmark_files_add_efficiency_columns(files, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"schema_version": 1, "kind": "benchmark", "finished": "2026-01-01T00:00:00+00:00", "evaluations": [
        {"model": {"spec": "hf:big", "name": "big"}, "efficiency": {"tokens_per_second": 50.0}},
        {"model": {"spec": "hf:other", "name": "other"}, "efficiency": {"tokens_per_second": 80.0}}]}))
    entries = load_entries([*files, bench])
    assert [e.label for e in entries] == ["hf:big", "hf:small", "scratch:small", "hf:other"]
    assert entries[0].efficiency == {"tokens_per_second": 50.0} and entries[3].tasks == {}
    assert main(["leaderboard", *map(str, files), str(bench), "--no-details"]) == 0
