"""Synthetic but realistic results files for the reporter tests, scored by the real metric classes.

`write_results(folder, name, models)` writes a results JSON and per-sample JSONL files in the
runner's layout: each model answers a multiple-choice task (acc, acc_norm), a translation task
(bleu, chrf, ter, rougeL; corpus-level and per-sample metrics) and a language-modelling task
(word_perplexity, bits_per_byte; lower is better). `quality` in [0, 1] sets how often a model is
right, so tests can build a model that is better, worse or the same as another.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.metrics.base import Sample, get_metric
from harness.metrics.stats import summarize

N_DOCS = 40
WORDS = ["the", "cat", "sat", "on", "a", "warm", "mat", "while", "rain", "fell", "over", "quiet", "hills", "and",
         "old", "boats", "drifted", "slowly", "toward", "the", "harbour", "where", "children", "watched", "birds"]
MC_CHOICES = ["red", "green", "blue", "yellow"]


@dataclass
class FakeModel:
    spec: str
    n_params: int | None = 135_000_000
    backend: str = "hf"
    dtype: str = "float32"
    quality: float = 0.7
    seed: int = 0
    outputs: dict[int, str] = field(default_factory=dict)  # doc index -> forced translation output
    max_gen_toks: int = 32  # recorded in the task config and the prompt hash
    tasks: tuple[str, ...] = ("mc_colors", "translate_toy", "lm_toy")


def _docs(n: int) -> list[dict[str, Any]]:
    rng = random.Random(42)
    return [{"id": f"d{i}", "gold": i % 4, "source": " ".join(rng.choices(WORDS, k=8)),
             "ref": " ".join(rng.choices(WORDS, k=9)), "text": " ".join(rng.choices(WORDS, k=30))} for i in range(n)]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _samples(task: str, model: FakeModel, docs: list[dict[str, Any]]) -> tuple[list[Sample], list[dict], dict]:
    rng = random.Random(f"{model.spec}:{model.seed}:{task}")
    samples, rows = [], []
    config: dict[str, Any] = {"task": task, "output_type": None, "metadata": {"version": 1.0}}
    for i, d in enumerate(docs):
        right = rng.random() < model.quality
        if task == "mc_colors":
            prompt = f"Question {d['id']}: which colour?\nAnswer:"
            pick = d["gold"] if right else (d["gold"] + 1 + rng.randrange(3)) % 4
            lls = [(-1.0 if k == pick else -2.0 - 0.1 * k, k == pick) for k in range(4)]
            s = Sample(d["id"], "multiple_choice", target=d["gold"], loglikelihoods=lls, choices=MC_CHOICES, context=prompt)
            row = {"responses": [list(x) for x in lls], "choices": MC_CHOICES, "target": d["gold"]}
            config["output_type"] = "multiple_choice"
        elif task == "translate_toy":
            prompt = f"Translate: {d['source']}\nEnglish:"
            words = d["ref"].split()
            out = d["ref"] if right else " ".join(words[: rng.randrange(2, 6)] + rng.choices(WORDS, k=3))
            out = model.outputs.get(i, out)
            s = Sample(d["id"], "generate_until", target=d["ref"], prediction=out, context=prompt, language="en")
            row = {"output": out, "target": d["ref"]}
            config.update(output_type="generate_until", generation_kwargs={"until": ["\n"], "max_gen_toks": model.max_gen_toks})
        else:
            prompt = ""
            per_byte = 0.55 + 0.35 * (1 - model.quality) + rng.uniform(-0.05, 0.05)
            lp = -per_byte * len(d["text"].encode())
            s = Sample(d["id"], "loglikelihood_rolling", target=d["text"], loglikelihoods=[(lp, True)],
                       text=d["text"], n_tokens=len(d["text"].split()) + 3)
            row = {"responses": [[lp, s.n_tokens]], "target": d["text"]}
            config["output_type"] = "loglikelihood_rolling"
        samples.append(s)
        rows.append({"doc_id": d["id"], "prompt": prompt, **row})
    return samples, rows, config


METRICS = {"mc_colors": ["acc", "acc_norm"], "translate_toy": ["bleu", "chrf", "ter", "rougeL"],
           "lm_toy": ["word_perplexity", "bits_per_byte"]}


def evaluation(folder: Path, run_id: str, model: FakeModel, n_docs: int = N_DOCS) -> dict[str, Any]:
    docs = _docs(n_docs)
    tasks = {}
    for task in model.tasks:
        samples, rows, config = _samples(task, model, docs)
        metrics = {}
        for name in METRICS[task]:
            metric = get_metric(name)
            stats = metric.sample_stats(samples)
            value = summarize(metric, stats, n_boot=200, seed=1234)
            metrics[name] = {**value.to_dict(), "signature": metric.signature()}
            for row, stat in zip(rows, stats):
                row.setdefault("scores", {})[name] = metric.sample_score(stat)
                row.setdefault("stats", {})[name] = stat
        rel = f"{run_id}/{model.spec.replace(':', '-')}__{task}.jsonl"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("".join(json.dumps(r) + "\n" for r in rows))
        tasks[task] = {
            "config": config, "n_samples": len(samples), "chat_template": False,
            "data_hash": _sha([d["id"] for d in docs] + [task]),
            "prompt_hash": _sha([r["prompt"] for r in rows] + [config.get("generation_kwargs")]),
            "template_hash": _sha(task), "metrics": metrics, "samples_file": rel,
            "timing": {"total_seconds": 1.0},
        }
    return {"model": {"name": model.spec.split(":")[-1], "backend": model.backend, "spec": model.spec,
                      "n_params": model.n_params, "dtype": model.dtype, "device": "cpu", "fingerprint": _sha(model.spec)},
            "tasks": tasks, "groups": {}}


def write_results(folder: Path, name: str, models: list[FakeModel], n_docs: int = N_DOCS) -> Path:
    """A results file `folder/name.json` holding one evaluation per model, with its samples."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"schema_version": 1, "kind": "evaluation", "run_id": name, "created": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:01:00+00:00",
            "command": "synthetic", "options": {}, "environment": {},
            "evaluations": [evaluation(folder, name, m, n_docs) for m in models]}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_synthetic_results_are_what_the_metrics_say(tmp_path):
    from harness.report.collect import load_entries

    good = write_results(tmp_path, "run", [FakeModel("hf:good", quality=0.95), FakeModel("hf:bad", quality=0.3)])
    entries = load_entries([good])
    assert [e.label for e in entries] == ["hf:good", "hf:bad"]
    g, b = (e.cell("mc_colors", "acc").value for e in entries)
    assert g > b
    assert entries[0].cell("lm_toy", "word_perplexity").value < entries[1].cell("lm_toy", "word_perplexity").value
    assert entries[0].cell("translate_toy", "bleu").value > entries[1].cell("translate_toy", "bleu").value
    line = json.loads(entries[0].samples_path("translate_toy").read_text().splitlines()[0])
    assert isinstance(line["stats"]["bleu"], list) and "output" in line
