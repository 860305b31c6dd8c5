"""TaskConfig: a task file's keys, validated with messages that name the file, the key and the fix.

Key names and defaults follow lm-evaluation-harness (its `config/task.py`), so its task files
load unchanged. Task files are data: a `!function` value (Python beside the YAML) is accepted
only on the keys where lm-evaluation-harness takes one, and only when the user passes
`--trust-task-code`; without it the message names the file, the key and the flag.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.taskfile import FunctionRef, function_refs, load_raw

CHAT_MODES = ("auto", "always", "never")
GENERATION_KEYS = {
    "until", "max_gen_toks", "max_new_tokens", "temperature", "do_sample", "top_p", "top_k",
    "repetition_penalty", "seed", "num_beams",
}
# lm-evaluation-harness keys accepted for compatibility that change nothing here.
IGNORED_KEYS = {"should_decontaminate", "doc_to_decontamination_query", "group", "task_list"}
# Keys (as paths) where lm-evaluation-harness accepts `!function`.
FUNCTION_KEYS = {
    "process_docs", "doc_to_text", "doc_to_target", "doc_to_choice", "process_results", "custom_dataset",
    "doc_to_decontamination_query", "metric_list[].metric", "metric_list[].aggregation",
    "fewshot_config.samples", "fewshot_config.process_docs", "fewshot_config.doc_to_text",
    "fewshot_config.doc_to_target", "fewshot_config.doc_to_choice", "fewshot_config.gen_prefix",
}
UNSUPPORTED_KEYS = {
    "doc_to_image": "multimodal (image) tasks are not supported",
    "doc_to_audio": "multimodal (audio) tasks are not supported",
    "use_prompt": "promptsource prompts (use_prompt) are not supported; write doc_to_text as a template",
    "class": "tasks defined by a Python class are not supported; write the task as YAML keys",
}
# dataset_kwargs that only say which data to read; anything else (trust_remote_code, builder
# options that run code) is refused.
DATA_KWARGS = {
    "data_files", "data_dir", "name", "split", "revision", "column_names", "header", "delimiter", "sep",
    "field", "encoding", "verification_mode", "streaming", "keep_in_memory",
}
SAMPLERS = ("default", "first_n")
FEWSHOT_KEYS = {
    "sampler", "split", "samples", "process_docs", "fewshot_indices", "doc_to_text", "doc_to_choice",
    "doc_to_target", "gen_prefix", "fewshot_delimiter", "target_delimiter",
}


@dataclass
class MetricEntry:
    metric: str
    options: dict[str, Any] = field(default_factory=dict)
    aggregation: str | FunctionRef | None = None  # lm-evaluation-harness's per-metric aggregation
    higher_is_better: bool | None = None
    function: FunctionRef | None = None  # `metric: !function utils.name` (task code)


@dataclass
class FewshotConfig:
    """lm-evaluation-harness's fewshot_config; unset fields fall back to the task's own keys."""

    sampler: str = "default"
    split: str | None = None
    samples: list[dict[str, Any]] | FunctionRef | None = None
    process_docs: FunctionRef | None = None
    fewshot_indices: list[int] | None = None
    doc_to_text: Any = None
    doc_to_choice: Any = None
    doc_to_target: Any = None
    gen_prefix: str | None = None
    fewshot_delimiter: str | None = None
    target_delimiter: str | None = None


@dataclass
class TaskConfig:
    task: str
    dataset_path: str | None = None
    output_type: str = "generate_until"  # lm-evaluation-harness's default
    tag: list[str] = field(default_factory=list)
    task_alias: str | None = None
    about: str = ""  # one line for `harness tasks` (lm-evaluation-harness's `description` is the prompt prefix)
    description: str = ""  # prompt prefix before the few-shot examples; the system message in chat
    language: str = "en"
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_revision: str | None = None
    custom_dataset: FunctionRef | None = None
    test_split: str | None = None
    validation_split: str | None = None
    training_split: str | None = None
    fewshot_split: str | None = None
    process_docs: FunctionRef | None = None
    num_fewshot: int = 0
    fewshot_config: FewshotConfig | None = None
    doc_to_text: Any = ""
    doc_to_target: Any = ""
    doc_to_choice: Any = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    gen_prefix: str | None = None
    process_results: FunctionRef | None = None
    filter_list: list[dict[str, Any]] | None = None
    repeats: int = 1
    chat_template: str = "never"  # as lm-evaluation-harness: plain text unless the file (auto, always) or the run asks
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    metric_list: list[MetricEntry] = field(default_factory=list)
    primary_metric: str | None = None  # what leaderboards rank this task by (default: by output type)
    perplexity_text: str | None = None  # whose words/bytes normalize perplexities (default: the scored text)
    rolling_max_length: int | None = None
    rolling_stride: int | None = None
    seed: int = 1234  # lm-evaluation-harness's fewshot_random_seed
    metadata: dict[str, Any] = field(default_factory=dict)
    source_file: str | None = None  # the YAML file this config came from
    trust_task_code: bool = False  # parsed with --trust-task-code: its `!function` values may run
    # no key of this project's own (OWN_KEYS): metrics follow lm-evaluation-harness exactly
    # (exact_match trims nothing, references as the file gives them)
    lm_eval_format: bool = False
    notes: list[str] = field(default_factory=list)  # what was accepted but changed (shown, recorded)

    @property
    def base_dir(self) -> Path:
        return Path(self.source_file).parent if self.source_file else Path.cwd()

    @property
    def uses_code(self) -> bool:
        return bool(function_refs({f.name: getattr(self, f.name) for f in fields(self) if f.name != "notes"}))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        out["metric_list"] = [
            {"metric": str(m.function) if m.function else m.metric, **m.options,
             **({"aggregation": _plain(m.aggregation)} if m.aggregation is not None else {})}
            for m in self.metric_list
        ]
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, FunctionRef):
        return str(value)
    if isinstance(value, FewshotConfig):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_TYPES = {f.name: f.type for f in fields(TaskConfig)}
_INTERNAL = {"source_file", "trust_task_code", "notes", "lm_eval_format"}
# Keys that lm-evaluation-harness's task files never have: a file with one is in this project's format.
OWN_KEYS = {"about", "language", "chat_template", "primary_metric", "perplexity_text", "rolling_max_length", "rolling_stride"}


def load_task_config(path: str | Path, *, trust_task_code: bool = False) -> TaskConfig:
    """Read and validate one task YAML file (its `include:` chain merged in)."""
    raw = load_raw(path)
    if "group" in raw and "task" in raw and not isinstance(raw["task"], str):
        raise HarnessError(f"{path}: this is a group file; pass its folder to --include-path and select the group by name")
    return parse_task_config(raw, str(Path(path)), trust_task_code=trust_task_code)


def check_functions(raw: dict[str, Any], where: str, *, trust_task_code: bool) -> None:
    """`!function` values: only on lm-evaluation-harness's keys, only with the trust flag, and the
    Python file must exist (nothing is imported here)."""
    for key, ref in function_refs(raw):
        if key not in FUNCTION_KEYS and not key.startswith("filter_list[].filter[]"):
            raise HarnessError(f"{where}: key {key!r}: `{ref}` is not allowed there (lm-evaluation-harness takes `!function` only on {', '.join(sorted(FUNCTION_KEYS))}, and filters)")
        if not trust_task_code:
            raise HarnessError(
                f"{where}: key {key!r} is `{ref}` (Python in {ref.module_path.name}); task code runs only "
                "with --trust-task-code (trust_task_code=True in Python)"
            )
        if not ref.module_path.is_file():
            raise HarnessError(f"{where}: key {key!r}: `{ref}` names {ref.module_path}, which does not exist; add the file or fix the name")


def parse_task_config(raw: dict[str, Any], source: str, *, trust_task_code: bool = False, has_code: bool = True) -> TaskConfig:
    """Validate a mapping of task keys (unknown key, wrong type, missing key, bad value, task code)."""
    where = source
    for key, reason in UNSUPPORTED_KEYS.items():
        if raw.get(key) is not None:
            raise HarnessError(f"{where}: key {key!r}: {reason}")
    if raw.get("unsafe_code"):
        raise HarnessError(f"{where}: key 'unsafe_code': tasks that execute model-written code are not supported")
    if has_code:
        check_functions(raw, where, trust_task_code=trust_task_code)
    values: dict[str, Any] = {"source_file": source, "trust_task_code": trust_task_code,
                              "lm_eval_format": not (set(raw) & OWN_KEYS)}
    notes: list[str] = []
    for key, value in raw.items():
        if key == "train_split":  # this project's older name for training_split
            key = "training_split"
        if key in IGNORED_KEYS or key == "unsafe_code":
            continue
        if key not in _TYPES or key in _INTERNAL:
            close = difflib.get_close_matches(str(key), list(_TYPES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise HarnessError(f"{where}: unknown key {key!r}{hint}")
        values[key] = _check_type(where, key, value, notes, trust_task_code, raw.get("custom_dataset"))
    if "task" not in values:
        raise HarnessError(f"{where}: missing required key 'task'")
    if values.get("dataset_path") is None and values.get("custom_dataset") is None:
        raise HarnessError(f"{where}: missing required key 'dataset_path'")
    values["notes"] = notes
    config = TaskConfig(**values)
    _check_values(where, config)
    return config


def _check_type(where: str, key: str, value: Any, notes: list[str], trust: bool, raw_custom: Any = None) -> Any:
    if isinstance(value, FunctionRef):
        return value  # allowed here: check_functions ran first
    if key == "tag":
        value = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HarnessError(f"{where}: key 'tag' must be a string or a list of strings")
        return value
    if key == "metric_list":
        return _metric_list(where, value)
    if key == "fewshot_config":
        return _fewshot_config(where, value)
    if key == "doc_to_choice":
        if value is not None and not isinstance(value, (str, list, dict)):
            raise HarnessError(f"{where}: key 'doc_to_choice' must be a template, a field name, a list or a mapping")
        return value
    if key == "doc_to_target":
        if not isinstance(value, (str, int, list)) or isinstance(value, bool):
            raise HarnessError(f"{where}: key 'doc_to_target' must be a template string, a field name or an integer")
        return value
    if key == "doc_to_text":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise HarnessError(f"{where}: key 'doc_to_text' must be a template string or a field name")
        return value
    if key == "dataset_kwargs":  # with custom_dataset (task code) they are that function's arguments
        return _dataset_kwargs(where, value, notes, trust, custom=isinstance(raw_custom, FunctionRef))
    if key == "filter_list":
        return _filter_list(where, value)
    if key in ("generation_kwargs", "metadata"):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise HarnessError(f"{where}: key {key!r} must be a mapping")
        return dict(value)
    if key in ("num_fewshot", "seed", "rolling_max_length", "rolling_stride", "repeats"):
        if value is None and key in ("rolling_max_length", "rolling_stride", "num_fewshot"):
            return 0 if key == "num_fewshot" else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise HarnessError(f"{where}: key {key!r} must be a non-negative integer, not {value!r}")
        return value
    if key in ("test_split", "validation_split", "training_split", "fewshot_split", "dataset_name", "dataset_path",
               "perplexity_text", "task_alias", "gen_prefix", "dataset_revision", "custom_dataset",
               "process_docs", "process_results", "primary_metric"):
        if value is not None and not isinstance(value, str):
            raise HarnessError(f"{where}: key {key!r} must be a string")
        if key in ("custom_dataset", "process_docs", "process_results") and value is not None:
            raise HarnessError(f"{where}: key {key!r} must be `!function module.name` (Python beside the task file)")
        return value
    if value is None and key == "description":
        return ""
    if not isinstance(value, str):
        raise HarnessError(f"{where}: key {key!r} must be a string, not {type(value).__name__}")
    return value


def _metric_list(where: str, value: Any) -> list[MetricEntry]:
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{where}: key 'metric_list' must be a non-empty list of {{metric: NAME}} entries")
    entries = []
    for i, item in enumerate(value):
        if isinstance(item, (str, FunctionRef)):
            item = {"metric": item}
        metric = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(metric, (str, FunctionRef)):
            raise HarnessError(f"{where}: metric_list[{i}] must be a mapping with a 'metric' name")
        options = {k: v for k, v in item.items() if k not in ("metric", "aggregation", "higher_is_better", "hf_evaluate")}
        aggregation = item.get("aggregation")
        if aggregation is not None and not isinstance(aggregation, (str, FunctionRef)):
            raise HarnessError(f"{where}: metric_list[{i}].aggregation must be a name or `!function`")
        function = metric if isinstance(metric, FunctionRef) else None
        name = function.function_name if function else metric
        entries.append(MetricEntry(name, options, aggregation, item.get("higher_is_better"), function))
    return entries


def _fewshot_config(where: str, value: Any) -> FewshotConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: key 'fewshot_config' must be a mapping")
    unknown = set(value) - FEWSHOT_KEYS
    if unknown:
        raise HarnessError(f"{where}: fewshot_config has unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(FEWSHOT_KEYS))})")
    out = FewshotConfig(**{k: v for k, v in value.items() if v is not None or k == "sampler"})
    if out.sampler is None:
        out.sampler = "default"
    if out.sampler not in SAMPLERS:
        raise HarnessError(f"{where}: fewshot_config.sampler {out.sampler!r} is not one of {', '.join(SAMPLERS)}")
    samples = out.samples
    if samples is not None and not isinstance(samples, FunctionRef):
        if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
            raise HarnessError(f"{where}: fewshot_config.samples must be a list of documents (mappings)")
    return out


def _dataset_kwargs(where: str, value: Any, notes: list[str], trust: bool, custom: bool = False) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: key 'dataset_kwargs' must be a mapping")
    out = {}
    for key, item in value.items():
        if key == "trust_remote_code":
            # A dataset's own loading script is code: it runs only with the trust flag (and
            # datasets >= 4, as lm-evaluation-harness notes, runs none at all).
            if item and not trust:
                notes.append("dataset_kwargs.trust_remote_code ignored: dataset code runs only with --trust-task-code")
            elif item:
                out[key] = bool(item)
            continue
        if key not in DATA_KWARGS and not custom:
            raise HarnessError(
                f"{where}: dataset_kwargs key {key!r} is not a data option (allowed: {', '.join(sorted(DATA_KWARGS))}, "
                "trust_remote_code with --trust-task-code); remove it"
            )
        out[key] = item
    return out


def _filter_list(where: str, value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{where}: key 'filter_list' must be a list of {{name: NAME, filter: [...]}} pipelines")
    for i, item in enumerate(value):
        steps = item.get("filter") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(steps, list):
            raise HarnessError(f"{where}: filter_list[{i}] must be a mapping with 'name' and a 'filter' list")
        for step in steps:
            if not isinstance(step, dict) or not isinstance(step.get("function"), (str, FunctionRef)):
                raise HarnessError(f"{where}: filter_list[{i}] ({item['name']}): each filter step needs a 'function'")
    from harness.filters import check_filter_list

    return check_filter_list(where, value)


def _check_values(where: str, config: TaskConfig) -> None:
    from harness.adapters import get_adapter
    from harness.metrics.base import metric_class

    try:
        adapter = get_adapter(config.output_type)
    except HarnessError as err:
        raise HarnessError(f"{where}: {err}") from None
    if config.chat_template not in CHAT_MODES:
        raise HarnessError(f"{where}: chat_template must be one of {', '.join(CHAT_MODES)}")
    adapter.check_config(config, where)
    if config.filter_list is not None and not adapter.supports_filters:
        raise HarnessError(f"{where}: filter_list applies to generated answers; output_type {config.output_type!r} has none")
    _check_generation(where, config, adapter.generates)
    if not config.metric_list:
        config.metric_list = [MetricEntry(m) for m in adapter.default_metrics]
    names = [entry.metric for entry in config.metric_list]
    if config.primary_metric is not None and config.primary_metric not in names:
        raise HarnessError(f"{where}: primary_metric {config.primary_metric!r} is not in metric_list ({', '.join(names)})")
    for entry in config.metric_list:
        if entry.function is not None or config.process_results is not None:
            continue  # task code computes it (checked to exist above)
        try:
            cls = metric_class(entry.metric)
            ignored = sorted(set(entry.options) - set(cls.options))
            if ignored and not adapter.generates:
                # lm-evaluation-harness passes metric options only to generation metrics; for the
                # others it computes acc, acc_norm and perplexities itself and ignores them.
                config.notes.append(f"metric {entry.metric!r}: {', '.join(ignored)} ignored, as lm-evaluation-harness does")
                entry.options = {k: v for k, v in entry.options.items() if k in cls.options}
            cls(**entry.options)
        except HarnessError as err:
            raise HarnessError(f"{where}: {err}") from None
        if config.output_type not in cls.output_types:
            raise HarnessError(
                f"{where}: metric {entry.metric!r} does not apply to output_type {config.output_type!r} "
                f"(it takes {', '.join(sorted(cls.output_types))})"
            )


def _check_generation(where: str, config: TaskConfig, generates: bool) -> None:
    g = config.generation_kwargs
    unknown = set(g) - GENERATION_KEYS
    if unknown:
        raise HarnessError(
            f"{where}: generation_kwargs has unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(GENERATION_KEYS))})"
        )
    beams = g.pop("num_beams", 1)
    if beams not in (1, None):
        raise HarnessError(f"{where}: generation_kwargs.num_beams is {beams}: beam search is not supported; remove it or set 1")
    if "max_new_tokens" in g:  # what transformers' generate() reads; lm-evaluation-harness passes it through
        new = g.pop("max_new_tokens")
        g.setdefault("max_gen_toks", new)
    until = g.get("until")
    if isinstance(until, str):
        g["until"] = [until]
    if generates and "until" not in g:
        g["until"] = [config.fewshot_delimiter]  # lm-evaluation-harness's default
    if "temperature" in g:
        g["temperature"] = float(g["temperature"])

