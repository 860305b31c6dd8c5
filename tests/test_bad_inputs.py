"""Bad inputs a user can give, through the real command line: each is refused with exit code 2 and
exactly one line on stderr naming the file or field at fault, and writes no results file."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

GEN = """\
task: t
dataset_path: {builder}
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: generate_until
doc_to_text: "{text}"
doc_to_target: "{{{{a}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: 4}}
metric_list:
  - metric: {metric}
"""


def gen_task(builder: str = "json", data: str = "t.jsonl", text: str = "{{q}}", metric: str = "exact_match") -> str:
    return GEN.format(builder=builder, data=data, text=text, metric=metric)


JSONL = '{"q": "x", "a": "1"}\n{"q": "y", "a": "2"}\n'


@dataclass
class Case:
    files: dict[str, str | bytes]  # written under the task folder (cache/ names the cache folder)
    args: list[str]  # after `harness`; {tasks} and {out} are filled in
    named: str  # the line names this (a file, a field, a value); {tasks} is filled in
    env: dict[str, str] = field(default_factory=dict)


RUN = ["run", "--model", "smollm2-135m", "--tasks", "t", "--include-path", "{tasks}", "--output", "{out}"]
CASES = {
    "ragged csv: a missing cell": Case({"t.yaml": gen_task("csv", "t.csv"), "t.csv": "q,a\nx,1\ny\n"}, RUN,
                                      "{tasks}/t.csv: line 3"),
    "ragged csv: an extra cell": Case({"t.yaml": gen_task("csv", "t.csv"), "t.csv": "q,a\nx,1,2\n"}, RUN,
                                     "{tasks}/t.csv: line 2"),
    "csv: an open quote": Case({"t.yaml": gen_task("csv", "t.csv"), "t.csv": 'q,a\nx,"1\ny,2\n'}, RUN,
                              "{tasks}/t.csv: line 2"),
    "corrupt cache, recovery not asked for": Case(
        {"t.yaml": gen_task(), "t.jsonl": JSONL, "cache/responses.sqlite": os.urandom(8192)}, RUN,
        "{tasks}/cache/responses.sqlite"),
    "serve: port out of range": Case({}, ["serve", "--port", "99999"], "--port 99999"),
    "missing data file": Case({"t.yaml": gen_task(data="nowhere.jsonl")}, RUN, "nowhere.jsonl"),
    "malformed yaml": Case({"t.yaml": "task: t\ndataset_path: [json\n"}, RUN, "{tasks}/t.yaml"),
    "unknown task": Case({"t.yaml": gen_task(), "t.jsonl": JSONL},
                         [*RUN[:4], "no_such_task", *RUN[5:]], "no_such_task"),
    "unknown model": Case({"t.yaml": gen_task(), "t.jsonl": JSONL},
                          [RUN[0], "--model", "scratch:no-such-model", *RUN[3:]], "no-such-model"),
    "unknown metric": Case({"t.yaml": gen_task(metric="no_such_metric"), "t.jsonl": JSONL}, RUN, "no_such_metric"),
    "template names a missing field": Case({"t.yaml": gen_task(text="{{question}}"), "t.jsonl": JSONL}, RUN,
                                           "question"),
    "empty dataset": Case({"t.yaml": gen_task(), "t.jsonl": ""}, RUN, "{tasks}/t.yaml"),
    "bad option": Case({}, ["run", "--no-such-option"], "--no-such-option"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_no_results(tmp_path, case):
    tasks, out = tmp_path / "tasks", tmp_path / "out"
    tasks.mkdir()
    for name, content in case.files.items():
        path = tasks / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = [a.format(tasks=tasks, out=out) for a in case.args]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tasks / "cache"), **case.env}
    env.pop("HARNESS_RECOVER_CACHE", None)
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: ") and case.named.format(tasks=tasks) in lines[0], lines[0]
    assert not (out.exists() and list(Path(out).rglob("*.json")))
