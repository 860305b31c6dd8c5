"""lm-evaluation-harness's own task library (the `lm-eval` package pinned in the test extras) loads
through --include-path: counts of what the registry accepts, and how it reports the rest.

Configuration level: every key validated, includes merged, `!function` files located but not
imported, no data read. About 4,540 of lm-eval 0.4.13's task files need no code; the rest use
`!function` (accepted only with trust) or what this project does not run (images, audio,
Python task classes, model-written code execution).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.metrics.base import metric_names  # noqa: E402
from harness.registry import TaskRegistry  # noqa: E402
from tests.conftest import REPO  # noqa: E402

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
# acc_bytes (267 files), f1 and mcc come with the lm-evaluation-harness metrics; without them
# those files are (correctly) unavailable and the counts below are not reached.
METRICS_PRESENT = {"acc_bytes", "f1", "mcc"} <= set(metric_names())
needs_metrics = pytest.mark.xfail(not METRICS_PRESENT, reason="acc_bytes, f1, mcc metrics not installed", strict=True)


@pytest.fixture(scope="module")
def plain() -> TaskRegistry:
    registry = TaskRegistry([str(LM_EVAL_TASKS)])
    registry.validate_all()
    return registry


@pytest.fixture(scope="module")
def trusted(plain) -> TaskRegistry:  # noqa: ARG001 - shares the parsed files with `plain`
    registry = TaskRegistry([str(LM_EVAL_TASKS)], trust_task_code=True)
    registry.validate_all()
    return registry


def lm_eval_task_names() -> set[str]:
    from harness.taskfile import load_raw

    names = set()
    for path in LM_EVAL_TASKS.rglob("*.yaml"):
        try:
            raw = load_raw(path, copy_values=False)
        except HarnessError:
            continue
        if "group" not in raw and isinstance(raw.get("task"), str):
            names.add(raw["task"])
    return names


@needs_metrics
def test_without_task_code_at_least_4400_tasks_are_usable(plain):
    assert len([n for n, e in plain.entries.items() if e.path.startswith(str(LM_EVAL_TASKS))]) >= 4400


@needs_metrics
def test_with_trust_at_least_12000_tasks_are_accepted(trusted):
    assert len([n for n, e in trusted.entries.items() if e.path.startswith(str(LM_EVAL_TASKS))]) >= 12000


def test_every_task_file_is_usable_or_has_a_one_line_reason(plain, trusted):
    for registry in (plain, trusted):
        known = set(registry.entries) | set(registry.unavailable) | set(registry.groups)
        missing = lm_eval_task_names() - known
        assert not missing, sorted(missing)[:5]
        for name, reason in registry.unavailable.items():
            assert "\n" not in reason and ".yaml" in reason, (name, reason)
            assert "<unicode string>" not in reason
    # the flag widens only task code: nothing usable without it is refused with it
    assert set(plain.entries) <= set(trusted.entries)
    assert len(trusted.entries) > 2 * len(plain.entries)


def test_task_code_reason_names_file_key_and_flag(plain):
    reason = plain.unavailable["hellaswag"]
    assert "hellaswag.yaml" in reason and "'process_docs'" in reason and "--trust-task-code" in reason
    summary = plain.summary()
    assert summary["by_reason"]["key 'process_docs' needs --trust-task-code"]


def test_selecting_an_unavailable_task_raises_its_reason_and_a_glob_never_hides_it(plain):
    for pattern in ("hellaswag", "hellaswag*", "hella*"):
        with pytest.raises(HarnessError, match=r"task 'hellaswag' is unavailable: .*hellaswag.yaml.*--trust-task-code"):
            plain.select([pattern])
    assert [c.task for c in plain.select(["arc_easy"])] == ["arc_easy"]


def test_lm_eval_tasks_shadow_the_builtin_ones_with_a_note(plain):
    assert plain.config("arc_easy").source_file.startswith(str(LM_EVAL_TASKS))
    assert any("shadows 'arc_easy'" in note for note in plain.notes)


def test_groups_expand_names_tags_and_nested_groups(trusted):
    mmlu = trusted.selection(["mmlu"])
    assert len(mmlu) == 57 and all(s.config.task.startswith("mmlu_") for s in mmlu)
    assert all("mmlu" in s.groups for s in mmlu)
    assert trusted.config("mmlu_anatomy").task_alias == "anatomy"
    assert trusted.config("mmlu_anatomy").fewshot_config.sampler == "first_n"
    stem = trusted.groups["mmlu_stem"]
    assert stem.aggregate_metric_list and stem.aggregate_metric_list[0]["weight_by_size"] is True


def test_cli_lists_the_tree_with_a_summary_and_exits_2_on_an_unavailable_task(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness", *a], capture_output=True, text=True, cwd=REPO, timeout=600)  # noqa: E731
    listing = run("tasks", "--include-path", str(LM_EVAL_TASKS))
    assert listing.returncode == 0, listing.stderr
    assert "tasks usable" in listing.stdout and "key 'process_docs' needs --trust-task-code" in listing.stdout
    why = run("tasks", "--include-path", str(LM_EVAL_TASKS), "--unavailable", "hellaswag")
    assert why.stdout.startswith("hellaswag: ") and "--trust-task-code" in why.stdout
    failed = run("run", "--include-path", str(LM_EVAL_TASKS), "--tasks", "hellaswag*", "--output", str(tmp_path / "o"))
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 2 and len(lines) == 1 and "hellaswag.yaml" in lines[0] and "--trust-task-code" in lines[0]
    assert not (tmp_path / "o").exists()
