"""Side by side with lm-evaluation-harness, in one run: the same task files, the same model, the
same numbers, and what each costs.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_lmeval.py [--output results/peers]

Writes lm-evaluation-harness task files (its own format, which the harness reads unchanged) into
a temporary folder over the harness's embedded data:
  peer_rolling   rolling log-likelihood (word/byte perplexity, bits per byte) of English prose
  peer_mc        4-way multiple choice, 0-shot (acc, acc_norm)
  peer_mc_3shot  the same questions behind 3 examples (`fewshot_config: sampler: first_n`)
  peer_gen       short-answer generation, greedy, exact match
then runs, each in a fresh process so its wall time and peak resident memory are its own:
lm-evaluation-harness's `hf` model (on the plain transformers copy of SmolLM2-135M-Instruct that
the harness's hf backend loads), the harness's `hf:` backend and its `scratch:` decoder. No
response cache on either side. It prints per task every metric from each (they must agree), wall
time, peak memory and the ratios lm-eval / ours. The machine (CPU model and flags) is printed
beside them: on a shared machine, read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROLLING = """\
task: peer_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""

MC = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
    train: {shots}
test_split: test
fewshot_split: train
num_fewshot: {k}
{fewshot}output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""

GEN = """\
task: peer_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 16
  do_sample: false
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""

TASKS = ["peer_rolling", "peer_mc", "peer_mc_3shot", "peer_gen"]


def write_tasks(folder: Path, n_prose: int, n_mc: int, n_gen: int) -> dict[str, int]:
    """The four task files and their data; returns the document count per task."""
    def rows(path: Path) -> list[str]:
        return path.read_text(encoding="utf-8").splitlines()

    prose = rows(REPO / "tasks/language_modelling/lm_en.jsonl")[:n_prose]
    questions = rows(REPO / "tasks/multiple_choice/knowledge.jsonl")
    shots, mc, gen = questions[:3], questions[3:3 + n_mc], questions[3:3 + n_gen]
    for name, lines in {"prose": prose, "shots": shots, "mc": mc, "gen": gen}.items():
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "peer_rolling.yaml").write_text(ROLLING.format(data=folder / "prose.jsonl"))
    for name, k, fewshot in (("peer_mc", 0, ""), ("peer_mc_3shot", 3, "fewshot_config:\n  sampler: first_n\n")):
        (folder / f"{name}.yaml").write_text(
            MC.format(name=name, data=folder / "mc.jsonl", shots=folder / "shots.jsonl", k=k, fewshot=fewshot))
    (folder / "peer_gen.yaml").write_text(GEN.format(data=folder / "gen.jsonl"))
    words = sum(len(json.loads(line)["text"].split()) for line in prose)
    return {"peer_rolling": len(prose), "peer_mc": len(mc), "peer_mc_3shot": len(mc), "peer_gen": len(gen),
            "words": words}


# -- the children: one runner, one task, one process ------------------------------------------

def child_lmeval(folder: str, task: str, batch_size: int) -> dict[str, float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    directory = hf_directory()
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={directory},dtype=float32", tasks=[task],
        task_manager=TaskManager(include_path=folder), batch_size=batch_size, device="cpu",
    )["results"][task]
    # lm-eval keys metrics as "name,filter"; keep the values of its default filter
    return {k.split(",")[0]: v for k, v in out.items()
            if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))}


def child_harness(folder: str, task: str, spec: str, batch_size: int) -> dict[str, float]:
    import harness
    from harness.runner import RunOptions

    results = harness.evaluate([spec], [task], RunOptions(
        include_paths=[folder], output_dir=None, use_cache=False, n_boot=0, batch_size=batch_size))
    return metric_values(results, task)


def metric_values(results, task: str) -> dict[str, float]:  # noqa: ANN001
    """The metric values of one task of a one-model run."""
    if hasattr(results, "records"):
        return {r["metric"]: r["value"] for r in results.records() if r["task"] == task and r.get("value") is not None}
    metrics = results["evaluations"][0]["tasks"][task]["metrics"]
    return {name: m["value"] for name, m in metrics.items() if m.get("value") is not None}


def hf_directory() -> str:
    """The plain transformers copy of SmolLM2 that the harness's hf backend loads (made once)."""
    from harness.models.hf import converted_gguf_dir
    from harness.models.source import resolve_source

    return str(converted_gguf_dir(resolve_source("smollm2-135m")))


# -- the parent ---------------------------------------------------------------------------------

def run_child(args: list[str]) -> tuple[dict[str, float], float, float]:
    """Run one child; returns its metrics, wall seconds and peak RSS in MiB."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"bench_lmeval: child {' '.join(args)} failed (status {status}); rerun it alone to see why")
    metrics = json.loads(out.strip().splitlines()[-1])
    return metrics, wall, usage.ru_maxrss / 1024


def machine() -> str:
    from harness.results import cpu_model

    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
                break
    except OSError:
        pass
    return f"{cpu_model()}, {os.cpu_count()} CPUs ({flags})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prose-docs", type=int, default=30, help="English prose documents for peer_rolling (default 30, ~2,900 words)")
    p.add_argument("--mc-docs", type=int, default=40, help="questions for the multiple-choice tasks (default 40)")
    p.add_argument("--gen-docs", type=int, default=20, help="questions for peer_gen (default 20)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--runners", nargs="+", default=["lm-eval", "hf:smollm2-135m", "scratch:smollm2-135m"])
    p.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    p.add_argument("--output", type=Path, help="folder for bench_lmeval.json and bench_lmeval.md")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, folder, task, batch = args.child[0], args.child[1], args.child[2], int(args.child[3])
        values = child_lmeval(folder, task, batch) if kind == "lm-eval" else child_harness(folder, task, kind, batch)
        print(json.dumps(values))
        return 0

    hf_directory()  # converted once, before anything is timed
    with tempfile.TemporaryDirectory(prefix="bench-lmeval-") as tmp:
        sizes = write_tasks(Path(tmp), args.prose_docs, args.mc_docs, args.gen_docs)
        rows = []
        for task in args.tasks:
            for runner in args.runners:
                print(f"bench_lmeval: {runner} on {task} ...", file=sys.stderr, flush=True)
                metrics, wall, rss = run_child([runner, tmp, task, str(args.batch_size)])
                rows.append({"task": task, "runner": runner, "metrics": metrics, "wall_s": wall, "peak_rss_mib": rss})
    report = render(rows, sizes)
    print(report)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "bench_lmeval.json").write_text(json.dumps(
            {"machine": machine(), "sizes": sizes, "rows": rows}, indent=2) + "\n")
        (args.output / "bench_lmeval.md").write_text(report + "\n")
    return 0


def render(rows: list[dict], sizes: dict[str, int]) -> str:
    lines = [f"machine: {machine()}",
             f"data: {sizes['peer_rolling']} prose documents ({sizes['words']} words), "
             f"{sizes['peer_mc']} questions (MC), {sizes['peer_gen']} questions (generation); no response cache", "",
             "| task | runner | metrics | agree with lm-eval | wall s | peak RSS MiB | lm-eval / this, time | lm-eval / this, memory |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        ref = next((r for r in mine if r["runner"] == "lm-eval"), None)
        for r in mine:
            shown = ", ".join(f"{k} {v:.6g}" for k, v in sorted(r["metrics"].items()))
            agree = time_ratio = mem_ratio = ""
            if ref is not None and r is not ref:
                shared = [k for k in r["metrics"] if k in ref["metrics"]]
                worst = max((abs(r["metrics"][k] - ref["metrics"][k]) / max(abs(ref["metrics"][k]), 1e-12)
                             for k in shared), default=None)
                agree = "no shared metric" if worst is None else ("yes" if worst <= 1e-6 else f"NO (rel. diff {worst:.2g})")
                time_ratio = f"{ref['wall_s'] / r['wall_s']:.2f}x"
                mem_ratio = f"{ref['peak_rss_mib'] / r['peak_rss_mib']:.2f}x"
            lines.append(f"| {task} | {r['runner']} | {shown} | {agree} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} "
                         f"| {time_ratio} | {mem_ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
