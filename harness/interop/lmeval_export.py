"""`harness export --format lm-eval`: our results as lm-evaluation-harness writes its own.

Per model, DIR/<model_name_sanitized>/results_<date>.json (lm_eval/result_schema.py's
EvalResults: results, groups, group_subtasks, configs, versions, n-shot, higher_is_better,
n-samples, config, task_hashes, ...) and samples_<task>_<date>.jsonl (its SampleResult), the
layout and names lm-eval's EvaluationTracker writes and its loaders look for. Metric keys are
lm-eval's `metric,filter` (`acc,none`); stderr keys `acc_stderr,none`.

What our files do not hold is left honest: `doc` carries only the document id (the documents
themselves stay in the task's data), `original` sample counts equal the evaluated count, and the
harness's own values (bootstrap CIs, hashes) are kept under the extra key `harness`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from harness.interop.view import ModelView, RunView, SampleView, TaskView, read_run, read_samples
from harness.results import atomic_write_text


def hash_string(text: str) -> str:
    """lm-eval's hash of documents, prompts and targets (sha256 hex)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sanitize_model_name(name: str) -> str:
    """lm-eval's folder name for a model."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def metric_key(name: str, filter_name: str | None, suffix: str = "") -> str:
    """lm-eval's key: ('acc', None) -> 'acc,none'; ('exact_match', 'strict-match') -> 'exact_match,strict-match'."""
    return f"{name}{suffix},{filter_name or 'none'}"


def _split(key: str) -> tuple[str, str | None]:
    """A group metric's key, `name`, `name,filter` or `name[filter]`."""
    if key.endswith("]") and "[" in key:
        name, _, rest = key.partition("[")
        return name, rest[:-1]
    name, _, filter_name = key.partition(",")
    return name, filter_name or None


def _date_id(created: str | None) -> str:
    when = dt.datetime.fromisoformat(created) if created else dt.datetime.now(dt.timezone.utc)
    return when.replace(tzinfo=None).isoformat().replace(":", "-")


def _sanitize(value: Any) -> Any:
    """lm-eval's sanitize_list: responses become (nested lists of) strings."""
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    return str(value)


def sample_record(task: TaskView, index: int, s: SampleView) -> dict[str, Any]:
    """One of our samples as lm-eval's SampleResult."""
    kind = task.config.get("output_type")
    if kind == "multiple_choice" and s.choices is not None and s.responses is not None:
        delimiter = "" if task.chat_template else task.config.get("target_delimiter", " ")
        arguments = {f"gen_args_{i}": {"arg_0": s.prompt, "arg_1": delimiter + c} for i, c in enumerate(s.choices)}
        resps = [[_sanitize(r)] for r in s.responses]
        filtered = [_sanitize(r) for r in s.responses]
    elif kind == "generate_until":
        arguments = {"gen_args_0": {"arg_0": s.prompt, "arg_1": task.config.get("generation_kwargs") or {}}}
        resps, filtered = [[str(s.output)]], [str(s.output)]
    else:  # loglikelihood with one continuation, loglikelihood_rolling
        arguments = {"gen_args_0": {"arg_0": s.prompt, **({"arg_1": str(s.target)} if kind == "loglikelihood" else {})}}
        resps = [[_sanitize(r)] for r in (s.responses or [])]
        filtered = [_sanitize(r) for r in (s.responses or [])]
    target = s.target if not isinstance(s.target, list) else (s.target[0] if len(s.target) == 1 else s.target)
    doc = {"id": s.doc_id}
    record: dict[str, Any] = {
        "doc_id": index, "doc": doc, "target": str(target), "arguments": arguments, "resps": resps,
        "filtered_resps": filtered, "filter": "none", "metrics": list(s.scores),
        "doc_hash": hash_string(json.dumps(doc, indent=2, ensure_ascii=False)),
        "prompt_hash": hash_string(s.prompt), "target_hash": hash_string(str(target)),
    }
    record.update({k: v for k, v in s.scores.items()})
    return record


def task_block(task: TaskView) -> dict[str, Any]:
    block: dict[str, Any] = {"name": task.name, "alias": task.name, "sample_len": task.n_samples}
    for m in task.metrics.values():
        block[metric_key(m.name, m.filter)] = m.value
        block[metric_key(m.name, m.filter, "_stderr")] = "N/A" if m.stderr is None else m.stderr
    return block


def results_document(run: RunView, model: ModelView, samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """lm-eval's EvalResults for one model of a run."""
    opts = run.options
    # without --seed each task used its own config seed (lm-eval's fewshot_seed)
    seeds = [t.config.get("seed") for t in model.tasks if isinstance(t.config.get("seed"), int)]
    seed = opts.get("seed") if opts.get("seed") is not None else (seeds[0] if seeds else None)
    sizes = {t.name: t.n_samples for t in model.tasks}
    groups = {g: {"name": g, "alias": g, "sample_len": sum(sizes.get(t, 0) for t in members["tasks"]),
                  **{metric_key(*_split(k)): v for k, v in members.items() if k != "tasks"}}
              for g, members in model.groups.items()}
    model_args = f"pretrained={model.name}" + "".join(f",{k}={v}" for k, v in (opts.get("model_options") or {}).items())
    started = dt.datetime.fromisoformat(run.created).timestamp() if run.created else None
    return {
        "results": {t.name: task_block(t) for t in model.tasks},
        **({"groups": groups} if groups else {}),
        "group_subtasks": {**{g: list(m["tasks"]) for g, m in model.groups.items()},
                           **{t.name: [] for t in model.tasks}},
        "configs": {t.name: t.config for t in model.tasks},
        "versions": {t.name: (t.config.get("metadata") or {}).get("version") for t in model.tasks},
        "n-shot": {t.name: int(t.config.get("num_fewshot") or 0) for t in model.tasks},
        "higher_is_better": {t.name: {m.name: m.higher_is_better for m in t.metrics.values()} for t in model.tasks},
        "n-samples": {t.name: {"original": t.n_samples, "effective": t.n_samples} for t in model.tasks},
        "config": {
            "model": model.backend, "model_args": model_args, "model_num_parameters": model.n_params,
            "model_dtype": model.dtype, "batch_size": str(opts.get("batch_size")), "device": model.device,
            "use_cache": None, "limit": opts.get("limit"), "bootstrap_iters": opts.get("n_boot"),
            "gen_kwargs": opts.get("gen_kwargs") or None,
            **({} if seed is None else {"random_seed": seed, "numpy_seed": seed, "torch_seed": seed,
                                        "fewshot_seed": seed}),
        },
        "git_hash": (run.git_commit or "")[:7] or None,
        "date": started,
        "model_source": model.backend,
        "model_name": model.name,
        "model_name_sanitized": sanitize_model_name(model.name),
        "system_instruction": opts.get("system_instruction"),
        "system_instruction_sha": hash_string(opts["system_instruction"]) if opts.get("system_instruction") else None,
        "fewshot_as_multiturn": opts.get("fewshot_as_multiturn") if any(t.chat_template for t in model.tasks) else None,
        "chat_template": None,
        "chat_template_sha": None,
        "max_length": model.max_length,
        "task_hashes": {task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
                        for task, rows in samples.items()},
        "total_evaluation_time_seconds": str(round(sum(t.seconds or 0 for t in model.tasks), 3)),
        "harness": {"results_file": str(run.source), "spec": model.spec, "command": run.command,
                    "chat_template_applied": {t.name: t.chat_template for t in model.tasks}},
    }


def export_lmeval(path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write lm-eval's results and samples files for every model of results file `path`; returns them."""
    run = read_run(path)
    date_id = _date_id(run.created)
    written: list[Path] = []
    for model in run.models:
        folder = Path(out_dir) / sanitize_model_name(model.name if len(run.models) == 1 else model.spec)
        samples: dict[str, list[dict[str, Any]]] = {}
        for task in model.tasks:
            if task.samples_path is None or not task.samples_path.is_file():
                continue
            rows = [sample_record(task, i, s) for i, s in enumerate(read_samples(task.samples_path))]
            samples[task.name] = rows
            target = folder / f"samples_{task.name}_{date_id}.jsonl"
            atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            written.append(target)
        target = folder / f"results_{date_id}.json"
        atomic_write_text(target, json.dumps(results_document(run, model, samples), indent=2, ensure_ascii=False) + "\n")
        written.append(target)
    return written
