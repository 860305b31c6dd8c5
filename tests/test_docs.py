"""Every command in README.md and docs/*.md runs, or says why it cannot run here.

Code blocks are classified by their language tag: `bash`/`sh` blocks are commands (every line),
`console` blocks are transcripts (the lines after `$ ` are commands), and `text`, `yaml`, `json`,
`python` hold no commands. An untagged block is an error, so nothing escapes the check. A block
preceded by `<!-- docs-test: skip REASON -->`, or a command whose comment says `needs a GPU`,
`needs network` or `needs a long time`, is not run (REASON is one of those, said in words).

The commands run in a copy of the repository (so the committed results files they name must
be there), with `harness` on PATH meaning this checkout's harness, `--limit 2` on every
`harness run`, and the placeholder paths below replaced by real files.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_TAGS = {"bash", "sh", "console"}
OTHER_TAGS = {"text", "yaml", "json", "python", "jsonl"}
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b(?P<why>.*?)-->")
NEEDS = re.compile(r"#.*\bneeds (a GPU|network|a long time)\b")
REASONS = ("GPU", "network", "long time")


@dataclass
class Command:
    where: str  # file:line
    text: str
    skip: str | None  # why it is not run


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line)
        if pending[1].rstrip().endswith("\\"):
            pending = (pending[0], pending[1].rstrip()[:-1])
            continue
        out.append(pending)
        pending = None
    if pending is not None:
        out.append(pending)
    return out


def extract(path: Path) -> tuple[list[Command], list[str]]:
    """The commands of one markdown file, and the problems found (untagged blocks, unknown marks)."""
    commands, problems = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        tag, start = fence.group(1).lower(), i
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        where = f"{path.relative_to(REPO)}:{start + 1}"
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = SKIP.search(previous)
        if mark and not any(r in mark.group("why") for r in REASONS):
            problems.append(f"{where}: a skip mark must say it needs a GPU, network or a long time")
        if not tag:
            problems.append(f"{where}: untagged code block; tag it bash, console, text, yaml, json or python")
            continue
        if tag not in COMMAND_TAGS:
            if tag not in OTHER_TAGS:
                problems.append(f"{where}: unknown code block tag {tag!r}")
            continue
        if tag == "console":
            body = [(n, line.strip()[2:]) for n, line in body if line.strip().startswith("$ ")]
        for number, line in _logical_lines(body):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            needs = NEEDS.search(text)
            skip = mark.group("why").strip() if mark else (f"needs {needs.group(1)}" if needs else None)
            commands.append(Command(f"{path.relative_to(REPO)}:{number}", text, skip))
    return commands, problems


ALL = [(c, p) for doc in DOCS for c, p in [extract(doc)]]
COMMANDS = [c for commands, _ in ALL for c in commands]


def test_every_code_block_is_classified():
    problems = [p for _, ps in ALL for p in ps]
    assert not problems, "\n".join(problems)
    assert len([c for c in COMMANDS if c.skip is None]) >= 10  # the check checks something


def _smollm2_gguf() -> str:
    from harness.models.zoo import ZOO

    return str(ZOO["smollm2-135m"].path())


def substitute(text: str) -> str:
    """Small limits and real paths for a documented command."""
    text = text.replace(".venv/bin/harness", "harness").replace(".venv/bin/python", shlex.quote(sys.executable))
    text = text.replace("path/to/model.gguf", _smollm2_gguf())
    parts = []
    for command in re.split(r"(\s*(?:&&|;|\|)\s*)", text):
        if re.match(r"^(\S+=\S+\s+)*harness\s+run\b", command.strip()):
            command = re.sub(r"\s#.*$", "", command)
            command = re.sub(r"--limit\s+\d+", "--limit 2", command) if "--limit" in command else command + " --limit 2"
        parts.append(command)
    return "".join(parts)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the repository with a `harness` command on PATH and the example input files."""
    root = tmp_path_factory.mktemp("docs") / "repo"
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in (".git", ".venv", "__pycache__", ".pytest_cache", "build")
                or n.endswith((".pyc", ".egg-info"))}
        return skip | ({"runs"} & set(names) if Path(folder) == REPO else set())  # the user's runs, not results/runs

    shutil.copytree(REPO, root, ignore=ignore)
    bin_dir = root.parent / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "harness"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m harness \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (root / "hyp.txt").write_text("猫坐在垫子上。\n今天天气很好。\n")
    (root / "ref.txt").write_text("猫坐在垫子上。\n今天天气不错。\n")
    (root / "out.jsonl").write_text('{"output": "the cat sat", "target": "the cat sat down"}\n'
                                    '{"output": "a dog", "target": "the dog barked"}\n')
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=str(root), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HARNESS_PROGRESS="plain")
    return root, env


RUNNABLE = [c for c in COMMANDS if c.skip is None]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("command", RUNNABLE, ids=[c.where for c in RUNNABLE])
def test_documented_command_runs(command, workdir):
    root, env = workdir
    text = substitute(command.text)
    result = subprocess.run(["bash", "-o", "pipefail", "-c", text], cwd=root, env=env, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, f"{command.where}: {text}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
