"""The command line: one-line errors with exit code 2 and no results file; listings work."""

import re
import subprocess
import sys

import pytest

from tests.conftest import MC_DOCS, MC_TASK, REPO, write_task


def harness(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=1200)


@pytest.fixture
def tasks_dir(tmp_path):
    folder = tmp_path / "tasks"
    write_task(folder, "ok", MC_TASK.format(name="ok"), MC_DOCS)
    write_task(folder, "missing_data", MC_TASK.format(name="missing_data"))
    write_task(folder, "empty", MC_TASK.format(name="empty"), [])
    write_task(folder, "bad_field", MC_TASK.format(name="bad_field").replace("{{{{question}}}}", "{{question}}").replace("{{question}}", "{{qestion}}"), MC_DOCS)
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "nope_task"], "unknown task 'nope_task'"),
        (["--tasks", "missing_data"], "missing_data.jsonl does not exist"),
        (["--tasks", "empty"], "the dataset is empty"),
        (["--tasks", "bad_field"], "names field 'qestion', which the data lacks"),
        (["--tasks", "ok", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--tasks", "ok", "--model", "some-org/some-model"], "hub is switched off"),
        (["--tasks", "ok", "--batch-size", "zero"], "batch size must be a positive integer"),
        (["--tasks", "ok", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_results(tasks_dir, tmp_path, args, message):
    out = tmp_path / "out"
    result = harness("run", "--include-path", str(tasks_dir), "--output", str(out), *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_malformed_yaml_in_include_path(tasks_dir, tmp_path):
    write_task(tasks_dir, "bad_yaml", "task: bad_yaml\ndataset_path: [json\n")
    listing = harness("tasks", "--include-path", str(tasks_dir))
    assert listing.returncode == 0, listing.stderr
    assert "ok" in listing.stdout and re.search(r"\b1 unavailable", listing.stdout)
    assert "malformed YAML" in harness("tasks", "--include-path", str(tasks_dir), "--unavailable").stdout
    result = harness("run", "--include-path", str(tasks_dir), "--tasks", "bad_*", "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and re.search(r"bad_yaml.yaml: line \d+: malformed YAML", result.stderr)
    assert not (tmp_path / "o").exists()


def test_tasks_and_models_listings():
    tasks = harness("tasks")
    assert tasks.returncode == 0, tasks.stderr
    assert "output type" in tasks.stdout and "knowledge_mc" in tasks.stdout
    models = harness("models")
    assert models.returncode == 0 and "smollm2-135m" in models.stdout and "llama" in models.stdout
    assert "usage" in harness("run", "--help").stdout
    top = harness("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("run", "tasks", "score", "report", "compare"))


def test_every_command_has_its_module_and_help():
    """One home: each subcommand is harness/cli/<name>.py; its help renders (no doubled %)."""
    from harness import serve
    from harness.cli import COMMANDS, build_parser, command_module
    from harness.cli import serve as serve_cli

    parser = build_parser()
    for name in COMMANDS:
        module = command_module(name)
        assert module.__name__ == f"harness.cli.{name if name != 'import' else 'import_results'}" and callable(module.run)
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
    assert serve_cli.KEY_ENV == serve.KEY_ENV
    top = harness("--help").stdout
    assert "95% CIs" in top and "%%" not in top
    assert "95% CIs" in harness("report", "--help").stdout
