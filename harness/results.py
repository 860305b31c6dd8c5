"""The results schema: typed records of a run, read and written as versioned JSON.

    RunResults            one `harness run` (or `harness bench`): options, environment, status
      ModelEvaluation     one model: its ModelRecord, tasks, groups (bench: efficiency figures)
        TaskResult        one task: metrics, hashes, timing, where its samples are
          MetricResult    one metric (under one filter): value, CI, stderr, n, direction, signature
        GroupResult       a group's aggregates: GroupMetric (a MetricResult naming its tasks)
    SampleRecord          one line of a task's per-sample JSONL file

`RunResults.load` reads schema version 1 and 2 files; `save` writes version 2. Version 2 adds
`status` ("running", "complete", "partial") and `error` to the run, `git_dirty` to the
environment, and `name`/`filter` to every metric record. Unknown keys are kept (`other`) and
written back, so a file survives a round trip through an older reader of the same version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.environment import cpu_model, environment, git_commit, git_state  # noqa: F401 - re-exported
from harness.errors import HarnessError
from harness.storage import atomic_write_text, inside, to_json, write_json, write_jsonl  # noqa: F401 - re-exported

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
STATUSES = ("running", "complete", "partial")


def metric_key(name: str, filter: str | None = None) -> str:  # noqa: A002 - lm-eval's word
    """The key of a metric in `TaskResult.metrics`: its name, or `name[filter]` under a filter."""
    return name if filter is None else f"{name}[{filter}]"


def _known(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(cls)} - {"other"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


@dataclass
class MetricResult:
    """One metric of one task: the value, its bootstrap 95% CI and standard error, over n documents."""

    name: str
    value: float | None
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    higher_is_better: bool = True
    signature: dict[str, Any] = field(default_factory=dict)
    filter: str | None = None  # the response filter the metric was scored after (lm-eval's filter_list)
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return metric_key(self.name, self.filter)

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "filter": self.filter, "value": self.value, "stderr": self.stderr,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n,
                "higher_is_better": self.higher_is_better, "signature": self.signature, **self.other}

    @classmethod
    def from_dict(cls, key: str, data: dict[str, Any]) -> MetricResult:
        known, other = _known(cls, data)
        known.setdefault("name", key)  # version 1: the key is the name
        known.setdefault("value", None)
        known["higher_is_better"] = bool(known.get("higher_is_better", True))
        known["signature"] = dict(known.get("signature") or {})
        return cls(**known, other=other)


@dataclass
class GroupMetric(MetricResult):
    """A group's aggregate of one metric over the member tasks that have it."""

    tasks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "tasks": list(self.tasks)}


@dataclass
class GroupResult:
    name: str
    metrics: dict[str, GroupMetric] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: m.to_dict() for k, m in self.metrics.items()}

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> GroupResult:
        out = {}
        for key, record in data.items():
            m = GroupMetric.from_dict(key, {**record, "tasks": list(record.get("tasks") or [])})
            out[key] = m
        return cls(name, out)


@dataclass
class TaskResult:
    """One task on one model. `timing` holds the execution statistics (requests, cached and computed
    counts, seconds, tokens): an open record that backends and adapters may add figures to."""

    name: str
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    n_samples: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    chat_template: bool = False
    data_hash: str | None = None
    prompt_hash: str | None = None
    template_hash: str | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    samples_file: str | None = None  # relative to the results file's folder
    primary_metric: str | None = None  # the metric a leaderboard ranks the task by, when the runner records one
    other: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str, filter: str | None = None) -> MetricResult | None:  # noqa: A002
        """The metric by its fields: `name` under `filter` (without a filter: the one stored under
        the bare name, which is the task's primary answer pipeline)."""
        if filter is None and name in self.metrics:
            return self.metrics[name]
        return next((m for m in self.metrics.values() if m.name == name and m.filter == filter), None)

    def add(self, metric: MetricResult) -> None:
        self.metrics[metric.key] = metric

    def samples_path(self, folder: Path) -> Path | None:
        """The per-sample file, only if it lies inside `folder` (the results file's folder)."""
        return inside(folder, self.samples_file) if self.samples_file else None

    def to_dict(self) -> dict[str, Any]:
        out = {"config": self.config, "n_samples": self.n_samples, "chat_template": self.chat_template,
               "data_hash": self.data_hash, "prompt_hash": self.prompt_hash, "template_hash": self.template_hash,
               "metrics": {k: m.to_dict() for k, m in self.metrics.items()}, "timing": self.timing, **self.other}
        if self.samples_file is not None:
            out["samples_file"] = self.samples_file
        if self.primary_metric is not None:
            out["primary_metric"] = self.primary_metric
        return out

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> TaskResult:
        known, other = _known(cls, data)
        known.pop("name", None)
        # the file's keys are kept: they are the addresses readers and samples files use
        metrics = {k: MetricResult.from_dict(k, m) for k, m in (known.pop("metrics", None) or {}).items()}
        return cls(name, metrics, **known, other=other)


@dataclass
class ModelRecord:
    """What a results file records about a model (the backend's ModelInfo and its fingerprint)."""

    name: str | None = None
    backend: str | None = None
    spec: str | None = None
    n_params: int | None = None
    dtype: str | None = None
    device: str | None = None
    max_length: int | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific facts (load time, architecture)
    fingerprint: str | None = None
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.spec or self.name or "?")

    def get(self, key: str, default: Any = None) -> Any:
        """A field, or a key this reader does not know (from a newer writer or another backend), by
        name: for identities that backends add over time (weights, tokenizer)."""
        value = getattr(self, key) if key in _FIELDS_OF_MODEL else self.other.get(key, default)
        return default if value is None else value

    @classmethod
    def from_model(cls, model: Any) -> ModelRecord:
        return cls.from_dict({**model.info.to_dict(), "fingerprint": model.fingerprint})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "other"} | self.other

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecord:
        known, other = _known(cls, data or {})
        known["extra"] = dict(known.get("extra") or {})
        return cls(**known, other=other)


_FIELDS_OF_MODEL = frozenset({"name", "backend", "spec", "n_params", "dtype", "device", "max_length", "source",
                               "extra", "fingerprint"})


@dataclass
class ModelEvaluation:
    """One model's results: tasks and groups (`harness run`), or efficiency figures (`harness bench`)."""

    model: ModelRecord
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    groups: dict[str, GroupResult] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] | None = None
    other: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model.to_dict()}
        if self.tasks or not self.bench:
            out["tasks"] = {k: t.to_dict() for k, t in self.tasks.items()}
            out["groups"] = {k: g.to_dict() for k, g in self.groups.items()}
        if self.efficiency:
            out["efficiency"] = self.efficiency
        if self.bench is not None:
            out["bench"] = self.bench
        return out | self.other

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEvaluation:
        known, other = _known(cls, data)
        return cls(ModelRecord.from_dict(known.get("model") or {}),
                   {k: TaskResult.from_dict(k, t) for k, t in (known.get("tasks") or {}).items()},
                   {k: GroupResult.from_dict(k, g) for k, g in (known.get("groups") or {}).items()},
                   dict(known.get("efficiency") or {}), known.get("bench"), other)


@dataclass
class SampleRecord:
    """One document's request(s), response(s) and per-metric scores: one line of a samples file."""

    doc_id: Any
    prompt: Any = None
    target: Any = None
    output: str | None = None  # generate_until
    responses: list[Any] | None = None  # log-likelihood kinds
    choices: list[Any] | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"doc_id": self.doc_id, "prompt": self.prompt, "target": self.target}
        for name in ("output", "responses", "choices"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out | {"scores": self.scores, "stats": self.stats} | self.other

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleRecord:
        known, other = _known(cls, data)
        known.setdefault("doc_id", None)
        return cls(**known, other=other)


def load_samples(path: Path) -> list[SampleRecord]:
    """Every record of a per-sample JSONL file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [SampleRecord.from_dict(json.loads(line)) for line in lines if line.strip()]
    except OSError as err:
        raise HarnessError(f"{path}: cannot read samples file ({err.strerror})") from None
    except (json.JSONDecodeError, TypeError) as err:
        raise HarnessError(f"{path}: not a samples file ({err})") from None


@dataclass
class RunResults:
    """One results file. `status` is "running" while the run writes it, "complete" when every model
    finished, "partial" (with `error`) when it stopped early; readers say when it is not complete."""

    run_id: str
    kind: str = "evaluation"  # or "benchmark"
    status: str = "running"
    error: str | None = None
    created: str | None = None
    finished: str | None = None
    command: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    evaluations: list[ModelEvaluation] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # bench: models that failed to measure
    schema_version: int = SCHEMA_VERSION  # the version it was read as
    path: Path | None = None  # where it was read from or written to (not stored in the file)
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def status_note(self) -> str | None:
        """One line saying why these results are not the whole run, or None when they are."""
        if self.complete:
            return None
        where = f"{self.path}: " if self.path else ""
        done = ", ".join(e.model.label for e in self.evaluations) or "no model"
        if self.status == "running":
            return f"{where}run {self.run_id} has not finished (still running, or killed): results so far ({done})"
        return f"{where}PARTIAL run {self.run_id}: " + (f"stopped by error: {self.error}; " if self.error else "") + \
            f"results so far ({done})"

    def tasks(self) -> Iterator[tuple[ModelEvaluation, TaskResult]]:
        for evaluation in self.evaluations:
            for task in evaluation.tasks.values():
                yield evaluation, task

    def samples(self, task: str, model: str | None = None) -> list[SampleRecord]:
        """The per-sample records of `task` (for the model with that spec or name; default the first)."""
        for evaluation in self.evaluations:
            if model not in (None, evaluation.model.spec, evaluation.model.name) or task not in evaluation.tasks:
                continue
            if self.path is None:
                raise HarnessError(f"results of run {self.run_id} were not written to a folder: no samples file")
            path = evaluation.tasks[task].samples_path(self.path.parent)
            if path is None:
                raise HarnessError(f"{self.path}: task {task!r} has no samples file inside the results folder")
            return load_samples(path)
        raise HarnessError(f"no task {task!r}" + (f" for model {model!r}" if model else "") + " in these results")

    def records(self, *, groups: bool = False) -> list[dict[str, Any]]:
        """One plain dict per (model, task, metric): the tidy form for notebooks and spreadsheets;
        with groups=True also one per (model, group, metric), marked `"level": "group"`."""
        rows = []
        for evaluation in self.evaluations:
            m = evaluation.model
            base = {"run_id": self.run_id, "status": self.status, "model": m.label, "model_name": m.name,
                    "backend": m.backend, "n_params": m.n_params, "dtype": m.dtype}
            for task in evaluation.tasks.values():
                for metric in task.metrics.values():
                    rows.append({**base, "level": "task", "task": task.name, **_metric_row(metric),
                                 "n_samples": task.n_samples})
            for group in evaluation.groups.values() if groups else ():
                for metric in group.metrics.values():
                    rows.append({**base, "level": "group", "task": group.name, **_metric_row(metric),
                                 "n_samples": metric.n})
        return rows

    def to_pandas(self, *, groups: bool = False) -> Any:
        """`records()` as a pandas DataFrame (needs pandas: `pip install pandas`)."""
        try:
            import pandas as pd
        except ImportError:
            raise HarnessError("RunResults.to_pandas() needs pandas: pip install pandas "
                               "(or use .records(), a plain list of dicts)") from None
        return pd.DataFrame(self.records(groups=groups), columns=list(_RECORD_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        out = {"schema_version": SCHEMA_VERSION, "kind": self.kind, "run_id": self.run_id, "status": self.status,
               "error": self.error, "created": self.created, "finished": self.finished, "command": self.command,
               "options": self.options, "environment": self.environment,
               "evaluations": [e.to_dict() for e in self.evaluations]}
        if self.kind == "benchmark" or self.errors:
            out["errors"] = self.errors
        return out | self.other

    def save(self, path: str | Path | None = None) -> Path:
        """Write (atomically) as schema version 2; to `path`, or where it was last read or written."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise HarnessError(f"results of run {self.run_id} have no path to save to")
        write_json(target, self.to_dict())
        self.path = target
        return target

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> RunResults:
        version = data.get("schema_version")
        known, other = _known(cls, {k: v for k, v in data.items() if k not in ("schema_version", "path")})
        known["evaluations"] = [ModelEvaluation.from_dict(e) for e in known.get("evaluations") or []]
        known["options"] = dict(known.get("options") or {})
        known["errors"] = list(known.get("errors") or [])
        if version == 1:
            _upgrade_v1(known)
        known.setdefault("run_id", path.stem if path else "?")
        if known.get("status") not in STATUSES:
            raise HarnessError(f"{path or 'results'}: unknown status {known.get('status')!r}; one of {', '.join(STATUSES)}")
        return cls(**known, schema_version=version, path=path, other=other)

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        """Read a results file written by `harness run` or `harness bench` (schema version 1 or 2)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise HarnessError(f"{path}: cannot read results file ({err.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HarnessError(f"{path}: not a JSON results file ({err})") from None
        if not isinstance(data, dict) or "schema_version" not in data or "evaluations" not in data:
            raise HarnessError(f"{path}: not a harness results file (no schema_version/evaluations)")
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise HarnessError(f"{path}: schema version {version} is newer than this harness reads; upgrade")
        if version not in READABLE_VERSIONS:
            raise HarnessError(f"{path}: schema version {version} is not one this harness reads "
                               f"({', '.join(map(str, READABLE_VERSIONS))})")
        try:
            return cls.from_dict(data, path)
        except (TypeError, AttributeError, ValueError) as err:
            raise HarnessError(f"{path}: malformed results file ({err})") from None


_RECORD_COLUMNS = ("run_id", "status", "model", "model_name", "backend", "n_params", "dtype", "level", "task",
                   "metric", "filter", "value", "stderr", "ci_low", "ci_high", "n", "higher_is_better", "n_samples")


def _metric_row(m: MetricResult) -> dict[str, Any]:
    return {"metric": m.name, "filter": m.filter, "value": m.value, "stderr": m.stderr, "ci_low": m.ci_low,
            "ci_high": m.ci_high, "n": m.n, "higher_is_better": m.higher_is_better}


def _upgrade_v1(known: dict[str, Any]) -> None:
    """Version 1 had no status (a run was finished when `finished` was set) and marked a dirty git
    tree by a `-dirty` suffix on the commit."""
    known["status"] = "complete" if known.get("finished") else "partial"
    env = known.get("environment")
    if isinstance(env, dict) and "git_dirty" not in env and isinstance(env.get("git_commit"), str):
        commit = env["git_commit"]
        env["git_commit"], env["git_dirty"] = commit.removesuffix("-dirty"), commit.endswith("-dirty")


def load_results(path: str | Path) -> RunResults:
    """Read a results file (schema version 1 or 2) into typed records."""
    return RunResults.load(path)
