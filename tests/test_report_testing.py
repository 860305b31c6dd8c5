"""harness.testing: the pytest plugin and helpers that guard generation quality in a project's tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

from harness.testing import assert_golden, assert_no_regression, greedy_outputs, store_baseline
from tests.test_report_data import FakeModel, write_results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    return {"base": write_results(folder / "a", "base", [FakeModel("hf:m", quality=0.8)]),
            "same": write_results(folder / "b", "same", [FakeModel("hf:m", quality=0.8)]),
            "worse": write_results(folder / "c", "worse", [FakeModel("hf:m", quality=0.3, seed=1)]),
            "changed": write_results(folder / "d", "changed", [FakeModel("hf:m", quality=0.8, outputs={3: "a new output"})])}


def test_store_baseline_keeps_samples_beside_it(runs, tmp_path):
    stored = store_baseline(runs["base"], tmp_path / "baselines" / "m.json")
    data = json.loads(stored.read_text())
    rel = data["evaluations"][0]["tasks"]["mc_colors"]["samples_file"]
    assert rel == "m.samples/hf-m__mc_colors.jsonl" and (stored.parent / rel).exists()
    assert assert_no_regression(stored, runs["same"]).count("unchanged") == 8


def test_assert_no_regression_fails_with_the_table(runs):
    with pytest.raises(AssertionError) as info:
        assert_no_regression(runs["base"], runs["worse"])
    message = str(info.value)
    assert "mc_colors/acc regressed" in message and "REGRESSED" in message and "--harness-update-baseline" in message
    assert_no_regression(runs["base"], runs["worse"], absolute=1000)  # below the threshold: passes


def test_golden_snapshots(runs, tmp_path):
    outputs = greedy_outputs(runs["base"], "translate_toy")
    assert len(outputs) == 40 and all(isinstance(v, str) for v in outputs.values())
    snap = tmp_path / "golden.json"
    with pytest.raises(AssertionError, match="--harness-update-golden"):
        assert_golden(outputs, snap)
    assert_golden(outputs, snap, update=True)
    assert_golden(outputs, snap)
    with pytest.raises(AssertionError, match=r"1 of 40 greedy outputs differ(.|\n)*now:    'a new output'"):
        assert_golden(greedy_outputs(runs["changed"], "translate_toy"), snap)
    with pytest.raises(AssertionError, match="not a generate_until task"):
        greedy_outputs(runs["base"], "mc_colors")


def _plugin_args() -> list[str]:
    registered = any(ep.value == "harness.testing" for ep in entry_points(group="pytest11"))
    return [] if registered else ["-p", "harness.testing"]


def test_pytest_plugin_fixture_and_update_flags(runs, tmp_path):
    test_file = tmp_path / "test_quality.py"
    test_file.write_text(textwrap.dedent(f"""
        def test_gate(harness_regression):
            harness_regression.assert_no_regression("hf:m", ["x"], "baseline.json", candidate={str(runs['same'])!r})

        def test_golden(harness_regression):
            harness_regression.assert_golden("hf:m", "translate_toy", "golden.json", results={str(runs['base'])!r})
    """))

    def pytest_run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_plugin_args(),
                               "--rootdir", str(tmp_path), str(test_file), *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=1200, check=False)

    first = pytest_run()
    assert first.returncode == 1 and "no baseline results at baseline.json" in first.stdout, first.stdout + first.stderr
    assert "no golden snapshot at golden.json" in first.stdout
    update = pytest_run("--harness-update-baseline", "--harness-update-golden")
    assert update.returncode == 0, update.stdout + update.stderr
    assert (tmp_path / "baseline.json").exists() and (tmp_path / "golden.json").exists()
    again = pytest_run()
    assert again.returncode == 0 and "2 passed" in again.stdout, again.stdout
    test_file.write_text(test_file.read_text().replace(str(runs["same"]), str(runs["worse"])))
    worse = pytest_run()
    assert worse.returncode == 1 and "1 failed, 1 passed" in worse.stdout and "quality regression" in worse.stdout


@pytest.mark.slow
def test_real_model_gate_and_golden(tmp_path):
    """The worked example of docs/reporting.md on smollm2-135m: store, check, snapshot, check."""
    from harness.testing import RegressionChecker

    checker = RegressionChecker(tmp_path, update_baseline=True, update_golden=True)
    checker.assert_no_regression("smollm2-135m", ["knowledge_mc"], tmp_path / "base.json", limit=8)
    checker.assert_golden("smollm2-135m", "translation_fr_en", tmp_path / "golden.json", limit=3)
    checker.update_baseline = checker.update_golden = False
    comparison = checker.assert_no_regression("smollm2-135m", ["knowledge_mc"], tmp_path / "base.json", limit=8)
    assert {r.verdict for r in comparison.rows} == {"unchanged"}
    checker.assert_golden("smollm2-135m", "translation_fr_en", tmp_path / "golden.json", limit=3,
                          use_cache=False)  # recomputed: greedy decoding is deterministic
    assert len(json.loads((tmp_path / "golden.json").read_text())["outputs"]) == 3
