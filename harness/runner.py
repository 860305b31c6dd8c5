"""Models x tasks: load, build requests, execute with the cache, score, write results."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from harness import distributed, progress
from harness.adapters import get_adapter
from harness.cache import ResponseCache
from harness.errors import HarnessError
from harness.execute import execute
from harness.metrics.stats import summarize
from harness.models import load_model
from harness.models.base import LanguageModel
from harness.redact import redact, redact_value
from harness.registry import TaskRegistry
from harness.preflight import check_model_specs, reserve_run
from harness.groups import MemberScores, lmeval_group_scores, pooled_group_scores
from harness.results import (GroupResult, MetricResult, ModelEvaluation, ModelRecord, RunResults,
                             TaskResult, environment, write_jsonl)
from harness.storage import slug
from harness.task import Task

log = logging.getLogger(__name__)
# The harness's own decoder on SmolLM2: the same numbers as hf: (tested), several times faster on CPU.
DEFAULT_MODEL = "scratch:smollm2-135m"
DEFAULT_TASKS = ["core"]


@dataclass
class RunOptions:
    limit: int | None = None
    seed: int | None = None
    batch_size: int | str = 8
    dtype: str = "auto"  # the backend resolves it: bfloat16 on CUDA, float32 on CPU
    device: str = "auto"  # CUDA where torch sees a GPU, else CPU
    output_dir: str | None = "runs"
    use_cache: bool = True
    cache_dir: str | None = None
    include_paths: list[str] = field(default_factory=list)
    data_dir: str | None = None
    trust_remote_code: bool = False
    trust_task_code: bool = False  # run task files' `!function` code (lm-evaluation-harness tasks)
    allow_external_data: bool = False  # data_files outside the task's folder and data_dir
    n_boot: int = 1000
    command: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    # lm-evaluation-harness's run settings, with its meaning. apply_chat_template None: as each
    # task file says (default off); True/False: on (where the model has a template) or off for all.
    num_fewshot: int | None = None
    apply_chat_template: bool | None = None
    fewshot_as_multiturn: bool = True  # with a chat template: each shot its own user/assistant turn
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] = field(default_factory=dict)


def prepare_tasks(patterns: list[str], options: RunOptions, registry: TaskRegistry | None = None) -> list[Task]:
    """Select, load and check every task (data, templates, gold fields) before any model loads."""
    registry = registry or TaskRegistry(options.include_paths, trust_task_code=options.trust_task_code)
    tasks = []
    for config, group_limit in registry.select_with_limits(patterns):
        if options.seed is not None:
            config.seed = options.seed
        if options.num_fewshot is not None:
            config.num_fewshot = options.num_fewshot
        if options.gen_kwargs and get_adapter(config.output_type).generates:
            config.generation_kwargs = {**config.generation_kwargs, **options.gen_kwargs}
        task = Task(config, data_dir=options.data_dir, allow_external_data=options.allow_external_data)
        task.system_instruction = options.system_instruction or ""
        task.fewshot_as_multiturn = options.fewshot_as_multiturn
        limit = options.limit if options.limit is not None else group_limit
        if limit is not None:
            task.limit(limit)
        task.validate()
        tasks.append(task)
    return tasks


def evaluate(
    models: list[str | LanguageModel] | str | LanguageModel | None = None,
    tasks: list[str] | str | None = None,
    options: RunOptions | None = None,
    *,
    on_task_done: Callable[[str, str, TaskResult], None] | None = None,
) -> RunResults:
    """Evaluate each model on each task; returns the typed results (also written to disk, to
    `results.path`, unless options.output_dir is None).

    Before any model loads, every task is loaded and checked, every model spec is checked, and
    the run id is reserved in a usable output folder. The results file is written (first
    exclusively) after every task; if the run fails after a task finished, it is left marked
    partial with the error, and the error is raised; a run that computed nothing leaves nothing."""
    options = options or RunOptions()
    models = [models] if isinstance(models, (str, LanguageModel)) else list(models or [DEFAULT_MODEL])
    patterns = [tasks] if isinstance(tasks, str) else list(tasks or DEFAULT_TASKS)
    if options.limit is not None and options.limit < 1:
        raise HarnessError("--limit must be at least 1")
    registry = TaskRegistry(options.include_paths, trust_task_code=options.trust_task_code)
    selected = prepare_tasks(patterns, options, registry)
    groups = registry.groups_of([t.name for t in selected])
    plans = registry.group_plans([t.name for t in selected])
    # a model may be a spec to load or a LanguageModel the caller already loaded (and closes)
    check_model_specs([m for m in models if isinstance(m, str)])
    names = [m if isinstance(m, str) else m.info.spec for m in models]
    started = dt.datetime.now(dt.timezone.utc)
    base_id = started.strftime("%Y%m%dT%H%M%SZ") + "_" + slug("+".join(m.split("/")[-1] for m in names))
    results = RunResults(
        run_id=base_id, kind="evaluation", status="running", created=started.isoformat(timespec="seconds"),
        command=redact(options.command or "") or None,
        options={"limit": options.limit, "seed": options.seed, "batch_size": options.batch_size,
                 "dtype": options.dtype, "device": options.device, "n_boot": options.n_boot,
                 "trust_task_code": options.trust_task_code, "use_cache": options.use_cache,
                 "num_fewshot": options.num_fewshot, "apply_chat_template": options.apply_chat_template,
                 "fewshot_as_multiturn": options.fewshot_as_multiturn,
                 "system_instruction": options.system_instruction, "gen_kwargs": options.gen_kwargs,
                 "model_options": options.model_options},
    )
    main = distributed.is_main()  # under torchrun only rank 0 reads the cache and writes files
    folder = None
    if options.output_dir and main:
        folder = reserve_run(options.output_dir, base_id)
        results.run_id, results.path = folder.run_id, folder.results_path
    cache = None
    if options.use_cache and main:
        cache = ResponseCache(Path(options.cache_dir).expanduser() / "responses.sqlite" if options.cache_dir else None)
    suite = progress.SuiteProgress(len(models) * len(selected), disable=not main)
    try:
        for spec in models:
            loading = time.perf_counter()
            if main and isinstance(spec, str):
                progress.announce(f"loading {spec} ...")
            loaded = isinstance(spec, str)
            model = spec if not loaded else load_model(
                spec, dtype=options.dtype, device=distributed.rank_device(options.device),
                batch_size=options.batch_size, trust_remote_code=options.trust_remote_code, **options.model_options)
            if main and loaded:
                progress.write(f"loaded {model.info.spec} in {progress.duration(time.perf_counter() - loading)} "
                               f"({model.info.device}, {model.info.dtype})")
            if options.apply_chat_template and model.chat_template is None:
                progress.write(f"warning: {spec} has no chat template; its prompts stay plain text")
            entry = ModelEvaluation(ModelRecord.from_dict(
                redact_value({**model.info.to_dict(), "fingerprint": model.fingerprint})))
            results.evaluations.append(entry)
            results.environment = environment()
            member_scores: dict[str, MemberScores] = {}
            for task in selected:
                record, samples = run_task(model, task, cache=cache, options=options)
                member_scores[task.name] = MemberScores({m.name: m for m in task.metrics},
                                                        {m.name: [row["stats"][m.name] for row in samples] for m in task.metrics})
                if folder:
                    record.samples_file = folder.samples_file(model.info.spec, task.name)
                    write_jsonl(folder.root / record.samples_file, samples)
                entry.tasks[task.name] = record
                if folder:
                    folder.save(results.to_dict())
                if on_task_done:
                    on_task_done(model.info.spec, task.name, record)
                suite.task_done(f"{model.info.spec} | {task.name}")
            entry.groups, group_notes = group_aggregates(entry.tasks, groups, plans, member_scores, options)
            if group_notes:
                entry.other["group_notes"] = group_notes
            # counters kept while running (api: retries)
            entry.model = ModelRecord.from_dict({**entry.model.to_dict(), **redact_value(model.info.to_dict())})
            if loaded:
                model.close()
    except BaseException as err:
        results.status = "partial"
        results.error = _describe(err)
        if folder and not any(e.tasks for e in results.evaluations):
            folder.discard()  # nothing computed: nothing to keep
        elif folder:
            folder.save(results.to_dict())
            if isinstance(err, HarnessError):
                raise HarnessError(f"{err} (the results so far are in {folder.results_path}, marked partial)") from None
        raise
    finally:
        suite.close()
        if cache:
            cache.close()
    results.status = "complete"
    results.finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if folder:
        folder.save(results.to_dict())
    return results


def _describe(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    text = str(err).splitlines()[0] if str(err) else ""
    return text if isinstance(err, HarnessError) else f"{type(err).__name__}: {text}".rstrip(": ")


def group_aggregates(tasks: dict[str, TaskResult], groups: dict[str, list[str]], plans: dict[str, Any] | None = None,
                     scores: dict[str, MemberScores] | None = None, options: RunOptions | None = None,
                     ) -> tuple[dict[str, GroupResult], dict[str, dict[str, str]]]:
    """Per group (or tag) whose members ran: a group file's aggregate_metric_list as
    lm-evaluation-harness computes it; otherwise each metric that alike members share, computed
    over their pooled documents (harness.groups). Also {group: {metric: why no value}}."""
    options = options or RunOptions()
    out: dict[str, GroupResult] = {}
    notes: dict[str, dict[str, str]] = {}
    for name, members in sorted(groups.items()):
        if plans and name in plans and plans[name].aggregate:
            metrics = lmeval_group_scores(name, plans, tasks)
        else:
            seed = options.seed if options.seed is not None else 1234
            metrics, skipped = pooled_group_scores(members, tasks, scores or {}, n_boot=options.n_boot, seed=seed)
            if skipped:
                notes[name] = skipped
        if metrics:
            out[name] = GroupResult(name, metrics)
    return out, notes


def run_task(model, task: Task, *, cache: ResponseCache | None, options: RunOptions) -> tuple[TaskResult, list[dict]]:  # noqa: ANN001
    """One task on one model: the task's typed result and its per-sample records.

    Every answer pipeline of the task (`filter_list`; else the output type's default, "none")
    is scored by every metric. `metrics` holds the first pipeline's values, each naming its
    `filter`; `metrics_by_filter` holds every pipeline's when the task has a `filter_list`."""
    t0 = time.perf_counter()
    docs = task.docs()
    adapter = task.adapter
    chat = model.apply_chat_template if task.uses_chat(model.chat_template is not None, options.apply_chat_template) else None
    instances = task.build(docs, chat)
    c = task.config
    rolling = {"max_length": c.rolling_max_length, "stride": c.rolling_stride}
    label = f"{model.info.name} | {task.name}"
    cut_before = dict(getattr(model, "truncated", None) or {})
    responses, exec_stats = execute(model, instances, cache=cache, label=label, rolling=rolling)
    # contexts the backend cut from the left to fit the model (computed requests; cached ones were
    # counted when they were computed)
    truncated = {k: n - cut_before.get(k, 0) for k, n in (getattr(model, "truncated", None) or {}).items()
                 if n - cut_before.get(k, 0)}
    if truncated:
        log.warning("%s: %s requests longer than the model's context were cut from the left (the end "
                    "kept, as lm-evaluation-harness does); recorded as truncated_requests", task.name,
                    sum(truncated.values()))
    t1 = time.perf_counter()
    seed = c.seed if options.seed is None else options.seed
    by_filter: dict[str, dict[str, MetricResult]] = {}
    scored: dict[str, tuple[list[Any], dict[str, list[Any]]]] = {}  # filter -> (kept answers, stats per metric)
    for pipeline in task.filters():
        kept = pipeline.apply(responses, docs)
        samples = [task.sample(inst, answer) for inst, answer in zip(instances, kept)]
        metrics: dict[str, MetricResult] = {}
        per_sample: dict[str, list[Any]] = {}
        for metric in task.metrics:
            stats = metric.sample_stats(samples)
            value = summarize(metric, stats, n_boot=options.n_boot, seed=seed)
            metrics[metric.name] = MetricResult(metric.name, **value.to_dict(), signature=metric.signature(),
                                                filter=pipeline.name if c.filter_list else None)
            per_sample[metric.name] = stats
        by_filter[pipeline.name] = metrics
        scored[pipeline.name] = (kept, per_sample)
    primary_filter = next(iter(by_filter))
    t2 = time.perf_counter()
    from harness.prompts import template_hash

    prompt_hash = template_hash(*(repr(inst.requests) for inst in instances))
    total = t2 - t0
    other: dict[str, Any] = {
        # Task code that ran for these numbers (--trust-task-code): file -> sha256.
        "task_code": dict(sorted(task.code_files.items())) or None, "notes": list(c.notes) or None,
        "primary_metric": c.primary_metric or adapter.primary_metric([m.name for m in task.metrics]),
        "truncated_requests": truncated or None,
    }
    if c.filter_list:
        other["metrics_by_filter"] = {f: {n: m.to_dict() for n, m in ms.items()} for f, ms in by_filter.items()}
    record = TaskResult(
        task.name, by_filter[primary_filter], n_samples=len(instances), config=c.to_dict(), chat_template=chat is not None,
        data_hash=task.data_hash(docs), prompt_hash=prompt_hash, template_hash=task.template_hash(),
        timing={**exec_stats.to_dict(), "total_seconds": round(total, 3), "metric_seconds": round(t2 - t1, 3),
                "metric_share": round((t2 - t1) / total, 4) if total > 0 else None},
        other=other,
    )
    rows = []
    for inst, resp in zip(instances, responses):
        row = {"doc_id": inst.doc_id, "prompt": inst.context, "target": inst.target, **adapter.log_row(inst, resp)}
        for name, (kept, per_sample) in scored.items():
            scores, stats = {}, {}
            for metric in task.metrics:
                stat = per_sample[metric.name][inst.index]
                scores[metric.name], stats[metric.name] = metric.sample_score(stat), stat
            if name == primary_filter:
                row["scores"], row["stats"] = scores, stats
            if c.filter_list:
                row.setdefault("filters", {})[name] = {"answer": kept[inst.index], "scores": scores}
        rows.append(row)
    summary = ", ".join(f"{n} {m.value:.4g}" for n, m in by_filter[primary_filter].items() if m.value is not None)
    share = exec_stats.computed_share  # below 1 where the cache or shared prefixes saved work
    ran = f", {share:.0%} of tokens run" if share is not None else ""
    progress.write(f"{model.info.spec} | {task.name}: {summary} ({len(instances)} docs, "
                   f"{exec_stats.n_computed} computed, {exec_stats.n_cached} cached{ran}, {total:.1f}s)")
    return record, rows
