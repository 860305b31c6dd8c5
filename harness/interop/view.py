"""A results file as the exporters need it: run, models, tasks, metrics, samples.

All dict access to our results and samples files is here, behind `read_run` and `read_samples`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.storage import json_lines
from harness.results import load_results


@dataclass
class MetricView:
    name: str
    filter: str | None  # the response filter it was scored after (lm-eval's filter_list), if any
    value: float | None
    stderr: float | None
    n: int | None
    higher_is_better: bool


@dataclass
class TaskView:
    name: str
    config: dict[str, Any]
    n_samples: int
    chat_template: bool
    metrics: dict[str, MetricView]
    samples_path: Path | None
    seconds: float | None


@dataclass
class ModelView:
    spec: str
    name: str
    backend: str
    n_params: int | None
    dtype: str | None
    device: str | None
    max_length: int | None
    tasks: list[TaskView]
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> {"tasks": [...], metric: value}


@dataclass
class RunView:
    source: Path
    created: str | None
    command: str | None
    options: dict[str, Any]
    git_commit: str | None
    packages: dict[str, str]
    models: list[ModelView]


@dataclass
class SampleView:
    doc_id: str
    prompt: str
    target: Any
    output: str | None  # generate_until
    responses: list[Any] | None  # loglikelihood: [logprob, is_greedy] per choice; rolling: [logprob, tokens]
    choices: list[str] | None
    scores: dict[str, Any]


def read_run(path: str | Path) -> RunView:
    """The results file of `harness run` at `path` (HarnessError for a benchmark file or bad data)."""
    path = Path(path)
    data = load_results(path)
    if hasattr(data, "to_dict"):  # the typed results model
        data = data.to_dict()
    if data.get("kind", "evaluation") != "evaluation":
        raise HarnessError(f"{path}: a {data.get('kind')} results file; only `harness run` results export")
    env = data.get("environment") or {}
    packages = env.get("packages")
    models = []
    for evaluation in data.get("evaluations", []):
        m = evaluation["model"]
        tasks = []
        for name, t in evaluation.get("tasks", {}).items():
            metrics = {k: MetricView(*_name_filter(k, v), v.get("value"), v.get("stderr"), v.get("n"),
                                     bool(v.get("higher_is_better", True)))
                       for k, v in t.get("metrics", {}).items()}
            rel = t.get("samples_file")
            tasks.append(TaskView(name, dict(t.get("config") or {}), int(t.get("n_samples") or 0),
                                  bool(t.get("chat_template")), metrics, path.parent / rel if rel else None,
                                  (t.get("timing") or {}).get("total_seconds")))
        groups = {g: {"tasks": sorted({x for v in ms.values() for x in v.get("tasks", [])}),
                      **{k: v.get("value") for k, v in ms.items()}}
                  for g, ms in (evaluation.get("groups") or {}).items()}
        models.append(ModelView(m.get("spec", m.get("name", "?")), m.get("name", "?"), m.get("backend", "?"),
                                m.get("n_params"), m.get("dtype"), m.get("device"), m.get("max_length"), tasks,
                                groups))
    return RunView(path, data.get("created"), data.get("command"), dict(data.get("options") or {}),
                   env.get("git_commit"), packages if isinstance(packages, dict) else {}, models)


def _name_filter(key: str, record: dict[str, Any]) -> tuple[str, str | None]:
    if "name" in record:
        return record["name"], record.get("filter")
    name, _, filter_name = key.partition(",")  # results files that key a filtered metric `name,filter`
    return name, filter_name or None


def read_samples(path: Path) -> list[SampleView]:
    """The per-sample records of one task (a samples JSONL file written by `harness run`)."""
    out = []
    for _, r in json_lines(path.read_text(encoding="utf-8").splitlines(), path):
        out.append(SampleView(str(r.get("doc_id")), r.get("prompt", ""), r.get("target"), r.get("output"),
                              r.get("responses"), r.get("choices"), dict(r.get("scores") or {})))
    return out
