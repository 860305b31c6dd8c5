"""Models x tasks: load, build requests, execute with the cache, score, write results."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import distributed, progress
from harness.cache import ResponseCache, set_cache_dir
from harness.errors import HarnessError
from harness.execute import execute
from harness.metrics.stats import summarize
from harness.models import load_model
from harness.redact import redact, redact_value
from harness.registry import TaskRegistry
from harness.results import SCHEMA_VERSION, environment, write_json, write_jsonl
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


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def prepare_tasks(patterns: list[str], options: RunOptions, registry: TaskRegistry | None = None) -> list[Task]:
    """Select, load and check every task (data, templates, gold fields) before any model loads."""
    registry = registry or TaskRegistry(options.include_paths, trust_task_code=options.trust_task_code)
    tasks = []
    for config, group_limit in registry.select_with_limits(patterns):
        if options.seed is not None:
            config.seed = options.seed
        if options.num_fewshot is not None:
            config.num_fewshot = options.num_fewshot
        if options.gen_kwargs and config.output_type == "generate_until":
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
    models: list[str] | str | None = None,
    tasks: list[str] | str | None = None,
    options: RunOptions | None = None,
    *,
    on_task_done: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate each model on each task; returns the results object (also written to disk
    unless options.output_dir is None)."""
    options = options or RunOptions()
    models = [models] if isinstance(models, str) else list(models or [DEFAULT_MODEL])
    patterns = [tasks] if isinstance(tasks, str) else list(tasks or DEFAULT_TASKS)
    if options.limit is not None and options.limit < 1:
        raise HarnessError("--limit must be at least 1")
    if options.cache_dir:
        set_cache_dir(options.cache_dir)
    registry = TaskRegistry(options.include_paths, trust_task_code=options.trust_task_code)
    selected = prepare_tasks(patterns, options, registry)
    groups = registry.groups_of([t.name for t in selected])
    plans = registry.group_plans([t.name for t in selected])
    started = dt.datetime.now(dt.timezone.utc)
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + "_" + slug("+".join(m.split("/")[-1] for m in models))
    main = distributed.is_main()  # under torchrun only rank 0 reads the cache and writes files
    out_dir = Path(options.output_dir) if options.output_dir and main else None
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "evaluation", "run_id": run_id,
        "created": started.isoformat(timespec="seconds"), "command": redact(options.command or "") or None,
        "options": {"limit": options.limit, "seed": options.seed, "batch_size": options.batch_size,
                    "dtype": options.dtype, "device": options.device, "n_boot": options.n_boot,
                    "trust_task_code": options.trust_task_code,
                    "num_fewshot": options.num_fewshot, "apply_chat_template": options.apply_chat_template,
                    "fewshot_as_multiturn": options.fewshot_as_multiturn,
                    "system_instruction": options.system_instruction, "gen_kwargs": options.gen_kwargs,
                    "model_options": options.model_options},
        "environment": None, "evaluations": [],
    }
    results_path = out_dir / f"{run_id}.json" if out_dir else None
    cache = ResponseCache() if options.use_cache and main else None
    suite = progress.SuiteProgress(len(models) * len(selected), disable=not main)
    try:
        for spec in models:
            loading = time.perf_counter()
            if main:
                progress.announce(f"loading {spec} ...")
            model = load_model(spec, dtype=options.dtype, device=distributed.rank_device(options.device),
                               batch_size=options.batch_size,
                               trust_remote_code=options.trust_remote_code, **options.model_options)
            if main:
                progress.write(f"loaded {model.info.spec} in {progress.duration(time.perf_counter() - loading)} "
                               f"({model.info.device}, {model.info.dtype})")
            if options.apply_chat_template and model.chat_template is None:
                progress.write(f"warning: {spec} has no chat template; its prompts stay plain text")
            entry = {"model": redact_value({**model.info.to_dict(), "fingerprint": model.fingerprint}), "tasks": {}}
            results["evaluations"].append(entry)
            results["environment"] = environment()
            for task in selected:
                record, samples = run_task(model, task, cache=cache, options=options)
                if out_dir:
                    rel = Path(run_id) / f"{slug(model.info.spec)}__{task.name}.jsonl"
                    write_jsonl(out_dir / rel, samples)
                    record["samples_file"] = str(rel)
                entry["tasks"][task.name] = record
                if results_path:
                    write_json(results_path, results)
                if on_task_done:
                    on_task_done(model.info.spec, task.name, record)
                suite.task_done(f"{model.info.spec} | {task.name}")
            entry["groups"] = group_aggregates(entry["tasks"], groups, plans)
            entry["model"].update(redact_value(model.info.to_dict()))  # counters kept while running (api: retries)
            model.close()
    finally:
        suite.close()
        if cache:
            cache.close()
    results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if results_path:
        write_json(results_path, results)
        results["path"] = str(results_path)
    return results


def group_aggregates(tasks: dict[str, Any], groups: dict[str, list[str]], plans: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per group (or tag) whose members all ran: a group file's aggregate_metric_list as
    lm-evaluation-harness computes it (harness.groups); otherwise each metric shared by two or
    more members, averaged over the members weighted by their sample counts, members named."""
    from harness.groups import group_scores

    out: dict[str, Any] = {}
    for name, members in sorted(groups.items()):
        if plans and name in plans and plans[name].aggregate:
            scores = group_scores(name, plans, tasks)
            if scores:
                out[name] = scores
            continue
        metrics: dict[str, Any] = {}
        names = {m for t in members for m in tasks[t]["metrics"]}
        for metric in sorted(names):
            have = [t for t in members if tasks[t]["metrics"].get(metric, {}).get("value") is not None]
            if len(have) < 2:
                continue
            weights = [tasks[t]["metrics"][metric]["n"] for t in have]
            value = sum(tasks[t]["metrics"][metric]["value"] * w for t, w in zip(have, weights)) / sum(weights)
            metrics[metric] = {"value": value, "tasks": have, "n": sum(weights),
                               "higher_is_better": tasks[have[0]]["metrics"][metric]["higher_is_better"]}
        if metrics:
            out[name] = metrics
    return out


def run_task(model, task: Task, *, cache: ResponseCache | None, options: RunOptions) -> tuple[dict[str, Any], list[dict]]:  # noqa: ANN001
    """One task on one model: the task's results record and its per-sample records."""
    t0 = time.perf_counter()
    docs = task.docs()
    chat = model.apply_chat_template if task.uses_chat(model.chat_template is not None, options.apply_chat_template) else None
    instances = task.build(docs, chat)
    c = task.config
    rolling = {"max_length": c.rolling_max_length, "stride": c.rolling_stride}
    label = f"{model.info.name} | {task.name}"
    responses, exec_stats = execute(model, instances, cache=cache, label=label, rolling=rolling)
    t1 = time.perf_counter()
    samples = [task.sample(inst, resp) for inst, resp in zip(instances, responses)]
    seed = c.seed if options.seed is None else options.seed
    metrics: dict[str, Any] = {}
    per_sample: dict[str, list[Any]] = {}
    for metric in task.metrics:
        stats = metric.sample_stats(samples)
        value = summarize(metric, stats, n_boot=options.n_boot, seed=seed)
        metrics[metric.name] = {**value.to_dict(), "signature": metric.signature()}
        per_sample[metric.name] = stats
    t2 = time.perf_counter()
    from harness.prompts import template_hash

    prompt_hash = template_hash(*(repr(inst.requests) for inst in instances))
    total = t2 - t0
    record = {
        "config": c.to_dict(), "n_samples": len(samples), "chat_template": chat is not None,
        "data_hash": task.data_hash(docs), "prompt_hash": prompt_hash, "template_hash": task.template_hash(),
        "metrics": metrics,
        # Task code that ran for these numbers (--trust-task-code): file -> sha256.
        "task_code": dict(sorted(task.code_files.items())) or None,
        "notes": list(c.notes) or None,
        "timing": {**exec_stats.to_dict(), "total_seconds": round(total, 3), "metric_seconds": round(t2 - t1, 3),
                   "metric_share": round((t2 - t1) / total, 4) if total > 0 else None},
    }
    rows = []
    for inst, sample, resp in zip(instances, samples, responses):
        row = {"doc_id": inst.doc_id, "prompt": inst.context, "target": inst.target}
        if inst.kind == "generate_until":
            row["output"] = resp[0]
        else:
            row["responses"] = resp
            if inst.choices:
                row["choices"] = inst.choices
        row["scores"] = {}
        for metric in task.metrics:
            stat = per_sample[metric.name][inst.index]
            row["scores"][metric.name] = metric.sample_score(stat)
            row.setdefault("stats", {})[metric.name] = stat
        rows.append(row)
    summary = ", ".join(f"{n} {m['value']:.4g}" for n, m in metrics.items() if m["value"] is not None)
    progress.write(f"{model.info.spec} | {task.name}: {summary} ({len(samples)} docs, "
                   f"{exec_stats.n_computed} computed, {exec_stats.n_cached} cached, {total:.1f}s)")
    return record, rows
