"""Regression tests of generation quality inside a project's own test suite.

A pytest plugin (entry point `pytest11: harness = "harness.testing"`) with a fixture,
`harness_regression`, and two options:

    --harness-update-baseline   (re)write stored baseline results files instead of failing on them
    --harness-update-golden     (re)write golden greedy-output snapshots instead of failing on them
    --harness-use-stale-cache   reuse cached responses (by default every check computes its answers)

    def test_quality(harness_regression):
        harness_regression.assert_no_regression("smollm2-135m", ["knowledge_mc"], limit=16,
                                                baseline="tests/baselines/smollm2.json", absolute={"acc": 0.05})

    def test_outputs(harness_regression):
        harness_regression.assert_golden("smollm2-135m", "translation_fr_en", "tests/golden/fr_en.json", limit=4)

The helpers below work without pytest too: `run_evaluation`, `store_baseline`,
`assert_no_regression`, `greedy_outputs`, `assert_golden`. Failures raise `AssertionError`
(pytest shows the message), and the message says how to update the stored file.

The plugin loads in every pytest session of an environment where the harness is installed, so
this module imports nothing heavy at import time: the runner and the comparison load when a
test first uses them.
"""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.report.compare import Comparison

try:
    import pytest
except ImportError:  # the helpers work without pytest
    pytest = None  # type: ignore[assignment]


def run_evaluation(model: str, tasks: Sequence[str] | str, output_dir: str | Path, *, limit: int | None = None,
                   include_paths: Sequence[str] = (), use_stale_cache: bool = False, **options: Any) -> Path:
    """Run `harness run` in-process; returns the results file.

    A regression check must compute what it checks, so the response cache is neither read nor
    written unless `use_stale_cache=True`: cached answers would hide a change to a backend, a
    tokenizer or a library that the cache key does not see."""
    from harness.runner import RunOptions, evaluate

    options.setdefault("use_cache", use_stale_cache)
    opts = RunOptions(limit=limit, output_dir=str(output_dir), include_paths=list(include_paths), **options)
    results = evaluate([model], [tasks] if isinstance(tasks, str) else list(tasks), opts)
    return Path(results.path)


def store_baseline(results: str | Path, baseline: str | Path) -> Path:
    """Copy a results file and its per-sample files to `baseline` (samples beside it, in <stem>.samples/)."""
    from harness.errors import HarnessError
    from harness.results import load_results

    results, baseline = Path(results), Path(baseline)
    data = load_results(results)
    folder = baseline.parent / f"{baseline.stem}.samples"
    if folder.exists():
        shutil.rmtree(folder)
    for _, task in data.tasks():
        if task.samples_file:
            source = task.samples_path(results.parent)
            if source is None:
                raise HarnessError(f"{results}: samples file {task.samples_file!r} lies outside the results folder")
            target = folder / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            task.samples_file = f"{folder.name}/{target.name}"
    data.save(baseline)
    return baseline


def assert_no_regression(baseline: str | Path, candidate: str | Path, *, alpha: float = 0.05,
                         absolute: Mapping[str, float] | float | None = None,
                         relative: Mapping[str, float] | float | None = None, force: bool = False,
                         n_resamples: int = 1000) -> Comparison:
    """Fail (AssertionError) if any metric regressed significantly or vanished; returns the comparison.
    Thresholds: a number for every metric, or {"metric" or "task/metric": number}."""
    from harness.report.compare import Thresholds, compare_files
    from harness.report.compare_render import render_comparison

    thresholds = Thresholds(alpha, _table(absolute), _table(relative))
    comparison = compare_files(baseline, candidate, thresholds=thresholds, force=force, n_resamples=n_resamples)
    if comparison.failed:
        bad = [r for r in comparison.rows if r.verdict in ("regressed", "missing")]
        names = ", ".join(f"{r.task}/{r.metric} {r.verdict}" for r in bad)
        raise AssertionError(f"quality regression against {baseline}: {names}\n\n{render_comparison(comparison)}"
                             "If the change is intended, rerun with --harness-update-baseline.")
    return comparison


def _table(value: Mapping[str, float] | float | None) -> dict[str, float]:
    if value is None:
        return {}
    return {"": float(value)} if isinstance(value, (int, float)) else {k: float(v) for k, v in value.items()}


def greedy_outputs(results: str | Path, task: str, model: str | None = None) -> dict[str, str]:
    """doc id -> generated text of a generate_until task in a results file (refusing sampled decoding)."""
    from harness.results import load_results

    results = Path(results)
    data = load_results(results)
    for evaluation in data.evaluations:
        if model not in (None, evaluation.model.spec, evaluation.model.name):
            continue
        record = evaluation.tasks.get(task)
        if record is None:
            continue
        kwargs = (record.config or {}).get("generation_kwargs") or {}
        if kwargs.get("do_sample") and float(kwargs.get("temperature", 1.0) or 0) > 0:
            raise AssertionError(f"{task}: golden snapshots need greedy decoding, but the task samples "
                                 f"(temperature {kwargs.get('temperature')})")
        rows = data.samples(task, evaluation.model.spec)
        if rows and rows[0].output is None:
            raise AssertionError(f"{task} is not a generate_until task: it has no outputs to snapshot")
        return {str(r.doc_id): r.output for r in rows}
    raise AssertionError(f"{results} has no task {task!r}" + (f" for model {model!r}" if model else ""))


def assert_golden(outputs: Mapping[str, str], snapshot: str | Path, *, update: bool = False,
                  meta: Mapping[str, Any] | None = None) -> None:
    """Compare outputs with a stored snapshot exactly; with update=True (re)write the snapshot."""
    from harness.results import write_json

    snapshot = Path(snapshot)
    if update:
        write_json(snapshot, {**(meta or {}), "outputs": dict(outputs)})
        return
    if not snapshot.exists():
        raise AssertionError(f"no golden snapshot at {snapshot}; create it with --harness-update-golden")
    stored = json.loads(snapshot.read_text(encoding="utf-8")).get("outputs", {})
    problems = []
    for doc in dict.fromkeys([*stored, *outputs]):
        if doc not in outputs or doc not in stored:
            problems.append(f"document {doc}: {'missing from the run' if doc not in outputs else 'not in the snapshot'}")
        elif outputs[doc] != stored[doc]:
            diff = difflib.unified_diff(stored[doc].splitlines(), outputs[doc].splitlines(), "golden", "now", lineterm="", n=1)
            problems.append(f"document {doc}:\n" + "\n".join(diff) if "\n" in stored[doc] + outputs[doc]
                            else f"document {doc}:\n  golden: {stored[doc]!r}\n  now:    {outputs[doc]!r}")
    if problems:
        shown = "\n".join(problems[:5]) + (f"\n... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise AssertionError(f"{len(problems)} of {len(stored)} greedy outputs differ from {snapshot}:\n{shown}\n"
                             "If the change is intended, rerun with --harness-update-golden.")


class RegressionChecker:
    """What the `harness_regression` fixture gives a test: run, then check against stored files."""

    def __init__(self, workdir: Path, update_baseline: bool = False, update_golden: bool = False,
                 use_stale_cache: bool = False):
        self.workdir = Path(workdir)
        self.update_baseline = update_baseline
        self.update_golden = update_golden
        self.use_stale_cache = use_stale_cache

    def evaluate(self, model: str, tasks: Sequence[str] | str, *, limit: int | None = None,
                 include_paths: Sequence[str] = (), **options: Any) -> Path:
        out = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        options.setdefault("use_stale_cache", self.use_stale_cache)
        return run_evaluation(model, tasks, out, limit=limit, include_paths=include_paths, **options)

    def assert_no_regression(self, model: str, tasks: Sequence[str] | str, baseline: str | Path, *,
                             limit: int | None = None, include_paths: Sequence[str] = (),
                             candidate: str | Path | None = None, alpha: float = 0.05,
                             absolute: Mapping[str, float] | float | None = None,
                             relative: Mapping[str, float] | float | None = None, force: bool = False,
                             **options: Any) -> Comparison:
        """Evaluate (unless `candidate` is given) and assert no significant regression against `baseline`."""
        candidate = Path(candidate) if candidate else self.evaluate(model, tasks, limit=limit,
                                                                    include_paths=include_paths, **options)
        baseline = Path(baseline)
        if self.update_baseline:
            store_baseline(candidate, baseline)
        elif not baseline.exists():
            raise AssertionError(f"no baseline results at {baseline}; create it with --harness-update-baseline")
        return assert_no_regression(baseline, candidate, alpha=alpha, absolute=absolute, relative=relative, force=force)

    def assert_golden(self, model: str, task: str, snapshot: str | Path, *, limit: int | None = None,
                      include_paths: Sequence[str] = (), results: str | Path | None = None, **options: Any) -> None:
        """Run a generate_until task greedily (unless `results` is given) and compare outputs with the snapshot."""
        results = Path(results) if results else self.evaluate(model, [task], limit=limit,
                                                              include_paths=include_paths, **options)
        outputs = greedy_outputs(results, task)
        assert_golden(outputs, snapshot, update=self.update_golden, meta={"model": model, "task": task, "limit": limit})


if pytest is not None:

    def pytest_addoption(parser: Any) -> None:
        group = parser.getgroup("harness", "harness quality regression tests")
        group.addoption("--harness-update-baseline", action="store_true",
                        help="rewrite the baseline results files that harness_regression compares with")
        group.addoption("--harness-update-golden", action="store_true",
                        help="rewrite the golden greedy-output snapshots that harness_regression compares with")
        group.addoption("--harness-use-stale-cache", action="store_true",
                        help="let harness_regression reuse cached responses (faster, but blind to backend changes)")

    @pytest.fixture
    def harness_regression(request: Any, tmp_path: Path) -> RegressionChecker:
        """Run tasks on a model and assert no regression against stored baselines and snapshots."""
        return RegressionChecker(tmp_path, request.config.getoption("--harness-update-baseline"),
                                 request.config.getoption("--harness-update-golden"),
                                 request.config.getoption("--harness-use-stale-cache"))
