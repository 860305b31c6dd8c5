"""TaskConfig: a task file's keys, validated with messages that name the file, the key and the fix.

Key names follow lm-evaluation-harness where the concept is the same, so simple
lm-evaluation-harness task files load unchanged; keys it has that would run code (`!function`,
`process_docs`, `process_results`, filters) are refused.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.metrics.base import OUTPUT_TYPES

CHAT_MODES = ("auto", "always", "never")
GENERATION_KEYS = {
    "until", "max_gen_toks", "temperature", "do_sample", "top_p", "top_k", "repetition_penalty", "seed",
}
# lm-evaluation-harness keys accepted for compatibility that change nothing here.
IGNORED_KEYS = {"should_decontaminate", "doc_to_decontamination_query", "training_split", "repeats", "fewshot_config", "unsafe_code", "dataset_revision"}


@dataclass
class MetricEntry:
    metric: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskConfig:
    task: str
    dataset_path: str
    output_type: str
    tag: list[str] = field(default_factory=list)
    about: str = ""  # one line for `harness tasks` (lm-evaluation-harness's `description` is the prompt prefix)
    description: str = ""  # prompt prefix before the few-shot examples; the system message in chat
    language: str = "en"
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    test_split: str | None = None
    validation_split: str | None = None
    train_split: str | None = None
    fewshot_split: str | None = None
    num_fewshot: int = 0
    doc_to_text: str = ""
    doc_to_target: str | int = ""
    doc_to_choice: str | list[str] | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    chat_template: str = "auto"
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    metric_list: list[MetricEntry] = field(default_factory=list)
    primary_metric: str | None = None  # what leaderboards rank this task by (default: by output type)
    perplexity_text: str | None = None  # whose words/bytes normalize perplexities (default: the scored text)
    rolling_max_length: int | None = None
    rolling_stride: int | None = None
    seed: int = 1234
    metadata: dict[str, Any] = field(default_factory=dict)
    source_file: str | None = None  # the YAML file this config came from

    @property
    def base_dir(self) -> Path:
        return Path(self.source_file).parent if self.source_file else Path.cwd()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["metric_list"] = [{"metric": m.metric, **m.options} for m in self.metric_list]
        return out


class _NoFunctionLoader(yaml.SafeLoader):
    """Safe YAML that names lm-evaluation-harness's `!function` tag instead of a generic error."""


def _refuse_function(loader, node):  # noqa: ANN001
    raise HarnessError(
        f"{loader.name}: line {node.start_mark.line + 1}: `!function` is not supported: task files are "
        "data and cannot run code; write the field as a Jinja2 template"
    )


_NoFunctionLoader.add_constructor("!function", _refuse_function)

_TYPES = {f.name: f.type for f in fields(TaskConfig)}
_REQUIRED = ("task", "dataset_path", "output_type")


def load_task_config(path: str | Path) -> TaskConfig:
    """Read and validate one task YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise HarnessError(f"{path}: cannot read task file ({err.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_NoFunctionLoader)  # a SafeLoader subclass  # noqa: S506
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise HarnessError(f"{path}: {where}malformed YAML ({problem}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: a task file must be a YAML mapping of keys to values")
    return parse_task_config(raw, str(path))


def parse_task_config(raw: dict[str, Any], source: str) -> TaskConfig:
    """Validate a mapping of task keys (unknown key, wrong type, missing key, bad value)."""
    where = source
    for key in ("process_docs", "process_results", "filter_list", "doc_to_image", "doc_to_audio"):
        if key in raw:
            raise HarnessError(f"{where}: key {key!r} is not supported: task files are data and cannot run code")
    if "group" in raw and "task" not in raw:
        raise HarnessError(f"{where}: this is a group file; pass it to --include-path as a folder")
    values: dict[str, Any] = {"source_file": source}
    for key, value in raw.items():
        if key in IGNORED_KEYS:
            continue
        if key not in _TYPES or key == "source_file":
            close = difflib.get_close_matches(str(key), list(_TYPES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise HarnessError(f"{where}: unknown key {key!r}{hint}")
        values[key] = _check_type(where, key, value)
    for key in _REQUIRED:
        if key not in values:
            raise HarnessError(f"{where}: missing required key {key!r}")
    config = TaskConfig(**values)
    _check_values(where, config)
    return config


def _check_type(where: str, key: str, value: Any) -> Any:
    if key == "tag":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HarnessError(f"{where}: key 'tag' must be a string or a list of strings")
        return value
    if key == "metric_list":
        return _metric_list(where, value)
    if key == "doc_to_choice":
        if not isinstance(value, (str, list)):
            raise HarnessError(f"{where}: key 'doc_to_choice' must be a template string or a list")
        return value
    if key == "doc_to_target":
        if not isinstance(value, (str, int)):
            raise HarnessError(f"{where}: key 'doc_to_target' must be a template string or an integer")
        return value
    if key in ("dataset_kwargs", "generation_kwargs", "metadata"):
        if not isinstance(value, dict):
            raise HarnessError(f"{where}: key {key!r} must be a mapping")
        return value
    if key in ("num_fewshot", "seed", "rolling_max_length", "rolling_stride"):
        if value is None and key.startswith("rolling"):
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise HarnessError(f"{where}: key {key!r} must be a non-negative integer, not {value!r}")
        return value
    if key in ("test_split", "validation_split", "train_split", "fewshot_split", "dataset_name", "perplexity_text",
               "primary_metric"):
        if value is not None and not isinstance(value, str):
            raise HarnessError(f"{where}: key {key!r} must be a string")
        return value
    if not isinstance(value, str):
        raise HarnessError(f"{where}: key {key!r} must be a string, not {type(value).__name__}")
    return value


def _metric_list(where: str, value: Any) -> list[MetricEntry]:
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{where}: key 'metric_list' must be a non-empty list of {{metric: NAME}} entries")
    entries = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict) or not isinstance(item.get("metric"), str):
            raise HarnessError(f"{where}: metric_list[{i}] must be a mapping with a 'metric' name")
        options = {k: v for k, v in item.items() if k not in ("metric", "aggregation", "higher_is_better")}
        entries.append(MetricEntry(item["metric"], options))
    return entries


def _check_values(where: str, config: TaskConfig) -> None:
    from harness.metrics.base import metric_class

    if config.output_type not in OUTPUT_TYPES:
        raise HarnessError(f"{where}: output_type {config.output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
    if config.chat_template not in CHAT_MODES:
        raise HarnessError(f"{where}: chat_template must be one of {', '.join(CHAT_MODES)}")
    if config.output_type == "multiple_choice" and config.doc_to_choice is None:
        raise HarnessError(f"{where}: output_type multiple_choice needs a 'doc_to_choice' key")
    unknown = set(config.generation_kwargs) - GENERATION_KEYS
    if unknown:
        raise HarnessError(
            f"{where}: generation_kwargs has unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(GENERATION_KEYS))})"
        )
    until = config.generation_kwargs.get("until")
    if isinstance(until, str):
        config.generation_kwargs["until"] = [until]
    if not config.metric_list:
        config.metric_list = [MetricEntry(m) for m in DEFAULT_METRICS[config.output_type]]
    names = [entry.metric for entry in config.metric_list]
    if config.primary_metric is not None and config.primary_metric not in names:
        raise HarnessError(f"{where}: primary_metric {config.primary_metric!r} is not in metric_list ({', '.join(names)})")
    for entry in config.metric_list:
        try:
            cls = metric_class(entry.metric)
            cls(**entry.options)
        except HarnessError as err:
            raise HarnessError(f"{where}: {err}") from None
        if config.output_type not in cls.output_types:
            raise HarnessError(
                f"{where}: metric {entry.metric!r} does not apply to output_type {config.output_type!r} "
                f"(it takes {', '.join(sorted(cls.output_types))})"
            )


DEFAULT_METRICS = {
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
}
