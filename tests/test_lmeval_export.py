"""`harness export --format lm-eval` read back by lm-evaluation-harness's own code, and `harness import`.

The reference is lm-eval 0.4.13 itself: its result schema (lm_eval/result_schema.py, validated
with pydantic as a TypedDict), the file-name helpers its tooling finds results with
(lm_eval/utils.py), and make_table, which prints its results table. The exported values must be
ours exactly; importing the export gives back our values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval import utils as lm_utils
from lm_eval.result_schema import EvalResults, SampleResult
from pydantic import TypeAdapter

from harness.cli import main
from harness.report.collect import load_entries
from tests.conftest import REPO

RUN = REPO / "results" / "runs" / "20261201T222109Z_scratch-smollm2-135m.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("lmeval")
    assert main(["export", "--format", "lm-eval", str(RUN), "-o", str(out)]) == 0
    return out, sorted(out.rglob("*.json*"))


def test_files_are_where_lm_evals_tooling_looks(exported):
    out, files = exported
    names = [str(p) for p in files]
    (results,) = lm_utils.get_results_filenames(names)
    samples = lm_utils.get_sample_results_filenames(names)
    ours = json.loads(RUN.read_text())
    tasks = list(ours["evaluations"][0]["tasks"])
    assert sorted(lm_utils.get_file_task_name(Path(s).name) for s in samples) == sorted(tasks)
    assert Path(results).parent.name == lm_utils.sanitize_model_name("smollm2-135m")
    dates = {lm_utils.get_file_datetime(Path(f).name) for f in samples}
    assert len(dates) == 1 and Path(results).stem == f"results_{dates.pop()}"


def test_results_match_lm_evals_schema_and_our_values(exported):
    _, files = exported
    (path,) = [p for p in files if p.name.startswith("results_")]
    doc = json.loads(path.read_text())
    # configs: lm-eval's own files hold lists and mappings there too (metric_list, generation_kwargs),
    # beyond the annotation's str | bool | None; every other key is checked.
    TypeAdapter(EvalResults).validate_python({k: v for k, v in doc.items() if k != "configs"})
    ours = json.loads(RUN.read_text())["evaluations"][0]["tasks"]
    for task, record in ours.items():
        for metric, m in record["metrics"].items():
            assert doc["results"][task][f"{metric},none"] == m["value"]
            assert doc["results"][task][f"{metric}_stderr,none"] == m["stderr"]
        assert doc["n-samples"][task]["effective"] == record["n_samples"]
        assert doc["higher_is_better"][task] == {k: v["higher_is_better"] for k, v in record["metrics"].items()}
    table = lm_utils.make_table(doc)
    assert "knowledge_mc" in table and f"{ours['knowledge_mc']['metrics']['acc']['value']:.4f}" in table


def test_samples_match_lm_evals_schema(exported):
    _, files = exported
    adapter = TypeAdapter(SampleResult)
    ours = json.loads(RUN.read_text())["evaluations"][0]["tasks"]
    for path in files:
        if not path.name.startswith("samples_"):
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        task = lm_utils.get_file_task_name(path.name)
        assert len(rows) == ours[task]["n_samples"]
        for row in rows:
            adapter.validate_python(row)
            assert row["prompt_hash"] == lm_utils.hash_string(row["arguments"]["gen_args_0"]["arg_0"])
            assert row["target_hash"] == lm_utils.hash_string(row["target"])
    mc = [json.loads(line) for line in next(p for p in files if "samples_knowledge_mc" in p.name).read_text().splitlines()]
    assert len(mc[0]["arguments"]) == 4 and mc[0]["arguments"]["gen_args_0"]["arg_1"].startswith(" ")
    assert isinstance(mc[0]["acc"], float)


def test_import_puts_an_lm_eval_run_on_our_leaderboard(exported, tmp_path, capsys):
    _, files = exported
    (path,) = [p for p in files if p.name.startswith("results_")]
    assert main(["import", "--format", "lm-eval", str(path), "-o", str(tmp_path)]) == 0
    (converted,) = tmp_path.glob("*.json")
    imported, original = load_entries([converted, RUN])
    assert imported.label.startswith("lm-eval:")
    for task, record in original.tasks.items():
        for metric, m in record.metrics.items():
            cell = imported.cell(task, metric)
            assert cell is not None and cell.value == pytest.approx(m.value) and cell.n == record.n_samples
    assert imported.samples_path("knowledge_mc").is_file()
    capsys.readouterr()
    assert main(["leaderboard", str(converted), str(RUN), "--format", "markdown"]) == 0
    board = capsys.readouterr().out
    assert "lm-eval:smollm2-135m" in board and "scratch:smollm2-135m" in board


def test_import_refuses_other_files(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"evaluations": []}')
    assert main(["import", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "no 'results' object" in capsys.readouterr().err
