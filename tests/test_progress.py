"""Progress that reads well in a log file, help texts, and a quiet end on a closed pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import progress
from tests.conftest import REPO


def test_announce_in_a_terminal_only(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS", "plain")
    progress.announce("loading m ...")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("HARNESS_PROGRESS", "bar")
    progress.announce("loading m ...")
    assert capsys.readouterr().err == "loading m ...\n"


def test_plain_progress_lines(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS", "plain")
    bar = progress.PlainProgress(10, "model | task", "req", interval=0.0)
    bar.update(4)
    bar.update(6)  # the end: the task's own summary line follows, no 10/10 line
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("model | task: 4/10 req (40%), ") and "left" in lines[0]
    assert progress.duration(5.04) == "5.0 s" and progress.duration(245) == "4m05s" and progress.duration(3720) == "1h02m"


@pytest.mark.timeout(900)
def test_a_run_logged_to_a_file_has_one_message_per_line(tmp_path):
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        result = subprocess.run(
            [sys.executable, "-m", "harness", "run", "--model", "scratch:smollm2-135m", "--tasks", "knowledge_mc,lm_en",
             "--limit", "2", "--output", str(tmp_path / "out"), "--no-cache", "--bootstrap", "20"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, timeout=850)
    assert result.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # no "loading ..." line in a log: the "loaded ... in" line says it (and a bad spec stays a one-line error)
    assert lines[0].startswith("loaded scratch:smollm2-135m in ") and ("(cpu, " in lines[0] or "(cuda" in lines[0])
    summaries = [line for line in lines if line.startswith("scratch:smollm2-135m | ")]
    assert [s.split(":")[1].split("|")[1].strip() for s in summaries] == ["knowledge_mc", "lm_en"]
    suite = [line for line in lines if line.startswith("suite: ")]
    assert suite[0].startswith("suite: 1/2 tasks done (scratch:smollm2-135m | knowledge_mc)") and "left" in suite[0]
    assert suite[1].startswith("suite: 2/2 tasks done") and "left" not in suite[1]


def test_closed_pipe_ends_quietly():
    runs = sorted(str(p) for p in (REPO / "results" / "runs").glob("*.json"))
    # far more than a pipe buffer, so that writing goes on after `head` has gone
    cmd = f"{sys.executable} -m harness show {' '.join(runs * 40)} | head -1"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.stdout.startswith("model") and result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 141


def test_help_texts_are_for_users():
    from harness.cli import COMMANDS, build_parser

    parser = build_parser()
    texts = [parser.format_help()]
    for name in COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[name]  # noqa: SLF001 - argparse has no public accessor
        texts.append(sub.format_help())
    for text in texts:
        assert "%%" not in text and "issue" not in text.lower(), text
