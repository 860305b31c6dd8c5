"""`harness import --format lm-eval`: an lm-evaluation-harness results file as one of our results files.

The reporter (report, leaderboard, compare, plot) then reads an old lm-eval run beside new
harness runs. Values and standard errors are lm-eval's; lm-eval records no confidence interval,
so the CI shown is the normal one, value ± 1.96 stderr (marked `"ci": "normal from lm-eval
stderr"` on each metric). Its samples_<task>_<date>.jsonl files beside the results file, when
there, become our samples files, so paired comparisons work on them too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.storage import json_lines
from harness.results import SCHEMA_VERSION, atomic_write_text

Z95 = 1.959963984540054


def _key(name: str, filter_name: str | None) -> str:
    """The key our results file gives a metric (the typed results model's, where it has one)."""
    try:
        from harness.results import metric_key
    except ImportError:
        return name if filter_name is None else f"{name},{filter_name}"
    return metric_key(name, filter_name)


def _metrics(block: dict[str, Any], higher: dict[str, Any], n: int | None) -> dict[str, Any]:
    """lm-eval's {'acc,none': v, 'acc_stderr,none': se} -> ours {'acc': {value, stderr, ci_low, ...}}."""
    out = {}
    for key, value in block.items():
        name, sep, filter_name = key.partition(",")
        if not sep or name.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        stderr = block.get(f"{name}_stderr,{filter_name}")
        stderr = float(stderr) if isinstance(stderr, (int, float)) else None
        filter_or_none = None if filter_name == "none" else filter_name
        out[_key(name, filter_or_none)] = {
            "name": name, "filter": filter_or_none, "value": float(value), "stderr": stderr,
            "ci_low": None if stderr is None else float(value) - Z95 * stderr,
            "ci_high": None if stderr is None else float(value) + Z95 * stderr,
            "n": n, "higher_is_better": bool(higher.get(name, True)), "ci": "normal from lm-eval stderr",
        }
    return out


def _samples(folder: Path, task: str) -> Path | None:
    found = sorted(folder.glob(f"samples_{task}_*.jsonl"))
    return found[-1] if found else None


def _convert_samples(path: Path, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """lm-eval writes one row per (document, filter); ours is one row per document, metrics keyed
    `metric` (filter none) or `metric,filter`. Per-sample statistics are kept for pairing only
    where every one is a number (lm-eval's corpus metrics log (reference, prediction) pairs)."""
    by_doc: dict[str, dict[str, Any]] = {}
    for _, s in json_lines(path.read_text(encoding="utf-8").splitlines(), path):
        args = s.get("arguments") or {}
        first = args.get("gen_args_0", {}) if isinstance(args, dict) else (args[0] if args else {})
        prompt = first.get("arg_0", "") if isinstance(first, dict) else (first[0] if first else "")
        doc = str(s.get("doc_id"))
        row = by_doc.setdefault(doc, {"doc_id": doc, "prompt": prompt, "target": s.get("target"), "scores": {}})
        for key, m in metrics.items():
            if (m["filter"] or "none") == s.get("filter", "none") and m["name"] in s:
                row["scores"][key] = s[m["name"]]
    rows = list(by_doc.values())
    numeric = all(isinstance(v, (int, float)) for r in rows for v in r["scores"].values())
    for row in rows:
        if numeric and set(row["scores"]) == set(metrics):
            row["stats"] = dict(row["scores"])
    return rows


def import_lmeval(path: str | Path, out_dir: str | Path) -> Path:
    """Convert lm-eval results file `path` (and its samples files) into our results file in `out_dir`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HarnessError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise HarnessError(f"{path}: no 'results' object; is this an lm-evaluation-harness results_*.json?")
    config = data.get("config") or {}
    name = data.get("model_name") or str(config.get("model_args") or "?")
    backend = data.get("model_source") or config.get("model") or "lm-eval"
    run_id = "lmeval_" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{path.stem}_{name}")[-80:]
    out = Path(out_dir)
    tasks: dict[str, Any] = {}
    for task, block in data["results"].items():
        if task in (data.get("groups") or {}):
            continue
        counts = (data.get("n-samples") or {}).get(task) or {}
        n = counts.get("effective") or block.get("sample_len")
        metrics = _metrics(block, (data.get("higher_is_better") or {}).get(task, {}), n)
        record: dict[str, Any] = {"config": (data.get("configs") or {}).get(task, {"task": task}),
                                  "n_samples": n, "metrics": metrics, "imported_from": str(path),
                                  "chat_template": bool(data.get("chat_template"))}
        samples = _samples(path.parent, task)
        if samples is not None:
            rel = Path(run_id) / f"{task}.jsonl"
            rows = _convert_samples(samples, metrics)
            atomic_write_text(out / rel, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            record["samples_file"] = str(rel)
        tasks[task] = record
    if not tasks:
        raise HarnessError(f"{path}: its 'results' hold no tasks")
    date = data.get("date")
    created = dt.datetime.fromtimestamp(float(date), dt.timezone.utc).isoformat(timespec="seconds") if date else None
    results = {
        "schema_version": SCHEMA_VERSION, "kind": "evaluation", "status": "complete", "run_id": run_id,
        "created": created, "finished": created,
        "command": f"lm_eval (imported from {path})",
        "options": {"limit": config.get("limit"), "seed": config.get("fewshot_seed"),
                    "batch_size": config.get("batch_size"), "dtype": config.get("model_dtype"),
                    "device": config.get("device"), "n_boot": config.get("bootstrap_iters")},
        "environment": {"git_commit": data.get("git_hash"), "lm_eval_version": data.get("lm_eval_version"),
                        "transformers_version": data.get("transformers_version")},
        "evaluations": [{
            "model": {"name": name, "backend": backend, "spec": f"lm-eval:{name}",
                      "n_params": config.get("model_num_parameters") or None, "dtype": config.get("model_dtype"),
                      "device": config.get("device"), "source": str(path)},
            "tasks": tasks,
        }],
    }
    target = out / f"{run_id}.json"
    atomic_write_text(target, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return target
