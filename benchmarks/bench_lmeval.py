"""Side by side with lm-evaluation-harness, in one run: the same task files, the same model, the
same numbers, and what each costs.

    .venv/bin/python benchmarks/bench_lmeval.py [--size small|full] [--output results/bench-lmeval]

Writes lm-evaluation-harness task files (its own format, which the harness reads unchanged) into
a temporary folder over the harness's embedded data:
  peer_rolling   rolling log-likelihood (word/byte perplexity, bits per byte) of English articles,
                 each a run of the embedded prose documents (about 2,000 words, as wikitext's are)
  peer_mc        4-way multiple choice, 0-shot (acc, acc_norm)
  peer_mc_3shot  the same questions behind 3 examples (`fewshot_config: sampler: first_n`)
  peer_gen       short-answer generation behind the same 3 examples, greedy, exact match of the
                 answer without its leading space (lm-eval's `remove_whitespace` filter)
then runs, each task in a fresh process per runner so that its wall time and peak resident memory
are its own: lm-evaluation-harness's `hf` model (on the plain transformers copy of
SmolLM2-135M-Instruct that the harness's hf backend loads), the harness's `hf:` backend and its
`scratch:` decoder, all float32 on the CPU, batch size 8, no response cache on either side. It
prints per task every metric from each (they must agree), the largest relative difference from
lm-eval's, the evaluation time (model loaded), the whole process's time, the peak resident memory
and the ratios. Then the scratch decoder's float32 batch-1 decode against the memory bandwidth
measured on the machine, and what the machine allows (bench_lmeval_ceilings.py): the compute
roof of peer_rolling (its model FLOPs over the float32 matrix-product peak measured here, against
each runner's achieved rate and the largest speedup over lm-eval it leaves) and the memory floor
(the peak of importing the runtime and loading the float32 weights, beside a third of lm-eval's
peaks). The machine (CPU model, flags, the scratch kernels chosen) heads the
table: on a shared machine, read the ratios, not the seconds. docs/bench.md says how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout's harness, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_lmeval_ceilings, when imported by path
from bench_lmeval_ceilings import ceilings, render_ceilings  # noqa: E402 - beside this file
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "smollm2-135m"
# Metric values agree when their relative difference is at most this: float32 sums of the same
# log-probabilities, added in another order or through other kernels (oneDNN in scratch:), differ
# in the last digits; accuracies and exact matches must be equal.
AGREE_REL = 1e-4


@dataclass(frozen=True)
class Size:
    """How much each task holds. `full` takes about 6 minutes on an idle 2-core CPU."""

    prose_docs: int  # peer_rolling: articles, each `paragraphs` consecutive lm_en documents
    paragraphs: int  # (about 97 words each: 20 make an article of about 2,000 words)
    mc_docs: int  # peer_mc and peer_mc_3shot: questions, 4 choices each
    gen_docs: int  # peer_gen: questions answered by greedy generation
    max_gen_toks: int  # peer_gen's generation cap (answers stop at a newline)
    decode_tokens: int  # the batch-1 decode measurement: new tokens per repetition
    decode_repetitions: int


SIZES = {
    "small": Size(prose_docs=2, paragraphs=2, mc_docs=6, gen_docs=6, max_gen_toks=8, decode_tokens=16, decode_repetitions=1),
    "full": Size(prose_docs=5, paragraphs=20, mc_docs=40, gen_docs=32, max_gen_toks=16, decode_tokens=64, decode_repetitions=5),
}

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
    train: {shots}
test_split: test
fewshot_split: train
num_fewshot: 3
fewshot_config:
  sampler: first_n
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {max_gen_toks}
  do_sample: false
filter_list:
  - name: strip
    filter:
      - function: remove_whitespace
      - function: take_first
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""

TASKS = ["peer_rolling", "peer_mc", "peer_mc_3shot", "peer_gen"]
RUNNERS = ["lm-eval", f"hf:{MODEL}", f"scratch:{MODEL}"]


def write_tasks(folder: Path, size: Size) -> dict[str, int]:
    """The four task files and their data; returns the document count per task (and the words)."""
    def rows(path: Path) -> list[str]:
        return path.read_text(encoding="utf-8").splitlines()

    paragraphs = [json.loads(line)["text"] for line in rows(REPO / "tasks/language_modelling/lm_en.jsonl")]
    if size.prose_docs * size.paragraphs > len(paragraphs):
        raise SystemExit(f"bench_lmeval: {size.prose_docs} x {size.paragraphs} paragraphs asked, {len(paragraphs)} embedded")
    # Rolling perplexity is for long documents: an article is a run of paragraphs, one per line
    # break pair, so its windows (the model's 8,192 tokens) and its word count are what a
    # wikitext article gives (the peak memory of a long window is part of what is measured).
    prose = [json.dumps({"text": "\n\n".join(paragraphs[a * size.paragraphs : (a + 1) * size.paragraphs])})
             for a in range(size.prose_docs)]
    questions = rows(REPO / "tasks/multiple_choice/knowledge.jsonl")
    shots, mc, gen = questions[:3], questions[3:3 + size.mc_docs], questions[3:3 + size.gen_docs]
    for name, lines in {"prose": prose, "shots": shots, "mc": mc, "gen": gen}.items():
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "peer_rolling.yaml").write_text(ROLLING.format(data=folder / "prose.jsonl"))
    for name, k, fewshot in (("peer_mc", 0, ""), ("peer_mc_3shot", 3, "fewshot_config:\n  sampler: first_n\n")):
        (folder / f"{name}.yaml").write_text(
            MC.format(name=name, data=folder / "mc.jsonl", shots=folder / "shots.jsonl", k=k, fewshot=fewshot))
    (folder / "peer_gen.yaml").write_text(GEN.format(data=folder / "gen.jsonl", shots=folder / "shots.jsonl", max_gen_toks=size.max_gen_toks))
    words = sum(len(json.loads(line)["text"].split()) for line in prose)
    return {"peer_rolling": len(prose), "peer_mc": len(mc), "peer_mc_3shot": len(mc), "peer_gen": len(gen),
            "words": words, "max_gen_toks": size.max_gen_toks}


# -- the children: one runner, one task, one process ------------------------------------------

def child_lmeval(folder: str, task: str, batch_size: int) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=hf_directory(), dtype="float32", batch_size=batch_size, device="cpu")
    started = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_path=folder),
                                  batch_size=batch_size, device="cpu")["results"][task]
    seconds = time.perf_counter() - started
    # lm-eval keys metrics as "name,filter"; keep the values of its default filter
    metrics = {k.split(",")[0]: v for k, v in out.items()
               if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))}
    return {"metrics": metrics, "eval_s": seconds}


def child_harness(folder: str, task: str, spec: str, batch_size: int) -> dict:
    import harness
    from harness.runner import RunOptions

    lm = harness.load_model(spec, dtype="float32", device="cpu", batch_size=batch_size)
    started = time.perf_counter()
    results = harness.evaluate([lm], [task], RunOptions(
        include_paths=[folder], output_dir=None, use_cache=False, n_boot=0, batch_size=batch_size))
    seconds = time.perf_counter() - started
    evaluation = results.evaluations[0]
    timing = evaluation.tasks[task].timing
    return {"metrics": {r["metric"]: r["value"] for r in results.records()
                        if r["task"] == task and r.get("value") is not None},
            "eval_s": seconds, "kernels": evaluation.model.extra.get("kernels"),
            "tokens_requested": timing.get("tokens_requested"), "tokens_computed": timing.get("tokens_computed")}


def child_decode(new_tokens: int, repetitions: int) -> dict:
    """scratch: float32 greedy decode of one request against the machine's memory bandwidth."""
    import harness
    from harness.benchmark.machine import memory_bandwidth

    bandwidth = memory_bandwidth()  # before the model: its 1 GiB of buffers are freed again
    lm = harness.load_model(f"scratch:{MODEL}", dtype="float32", device="cpu", batch_size=1)
    prompt = lm.tok_encode("The history of the printing press begins in the fifteenth century, when")
    rates = []
    for rep in range(repetitions + 1):  # the first is a warm-up
        stamps: list[float] = []
        lm.stream_token_ids([prompt], new_tokens, lambda row, token: stamps.append(time.perf_counter()))
        if rep:  # every token after the first, over the time from the first to the last
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    per_token = decode_bytes_per_token(lm.model)
    tok_s = max(rates)
    return {"kernels": f"{lm.kernels}, decode step {lm.decode_kernels}", "huge_page_mb": round(lm.huge_page_bytes / 2**20),
            "tokens_per_s": tok_s, "tokens_per_s_runs": rates, "new_tokens": new_tokens,
            "weight_bytes_per_token": per_token, "implied_gb_s": tok_s * per_token / 1e9,
            "bandwidth": bandwidth, "fraction_of_limit": tok_s * per_token / 1e9 / bandwidth["limit_gb_s"]}


def decode_bytes_per_token(model) -> int:  # noqa: ANN001
    """Bytes of weights one batch-1 decode step reads: every Linear's weight and bias and every
    norm's scale, each tensor once (a head tied to the embedding is read as the head), and one row
    of an embedding matrix that is not also a head. The KV cache is left out (under 1% here)."""
    from torch import nn

    seen: set[int] = set()
    total = 0
    modules = list(model.modules())
    for module in modules:
        if isinstance(module, nn.Embedding):
            continue
        for tensor in module.parameters(recurse=False):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    for module in modules:
        if isinstance(module, nn.Embedding) and id(module.weight) not in seen:
            total += module.weight[0].numel() * module.weight.element_size()
    return total


def hf_directory() -> str:
    """The plain transformers copy of SmolLM2 that the harness's hf backend loads (made once)."""
    from harness.models.hf import converted_gguf_dir
    from harness.models.source import resolve_source

    return str(converted_gguf_dir(resolve_source(MODEL)))


# -- the parent ---------------------------------------------------------------------------------

def run_child(args: list[str]) -> dict:
    """Run one child; returns its report with the process's wall seconds and peak RSS (MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()  # the child reports its own peak (VmHWM) as its last act
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise SystemExit(f"bench_lmeval: child {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    report = json.loads(out.strip().splitlines()[-1])
    return {**report, "process_s": wall}


def child_main(args: list[str]) -> int:
    from harness.benchmark.machine import MIB, peak_rss_bytes

    kind = args[0]
    if kind == "decode":
        report = child_decode(int(args[1]), int(args[2]))
    elif kind == "ceilings":
        from bench_lmeval_ceilings import child_ceilings

        report = child_ceilings(args[1], f"scratch:{MODEL}", int(args[2]))
    else:
        folder, task, batch = args[1], args[2], int(args[3])
        report = child_lmeval(folder, task, batch) if kind == "lm-eval" else child_harness(folder, task, kind, batch)
    report["peak_rss_mib"] = peak_rss_bytes() / MIB
    print(json.dumps(report))
    return 0


def machine_report() -> dict:
    """The machine, as `harness bench` records it, with the flags that decide the kernels."""
    from harness.benchmark.machine import describe, machine

    info = machine()
    have = set(info.get("cpu_flags") or [])
    flags = {f: f in have for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    return {"summary": describe(info), "flags": flags, "kernels_env": os.environ.get("HARNESS_CPU_KERNELS"),
            "info": info}


def compare(rows: list[dict]) -> None:
    """Add, to each of our rows, the largest relative metric difference from lm-eval's and the ratios."""
    for task in {r["task"] for r in rows}:
        ref = next((r for r in rows if r["task"] == task and r["runner"] == "lm-eval"), None)
        for r in rows:
            if r["task"] != task or ref is None or r is ref:
                continue
            shared = sorted(k for k in r["metrics"] if k in ref["metrics"])
            r["shared_metrics"] = shared
            r["max_rel_diff"] = max((abs(r["metrics"][k] - ref["metrics"][k]) / max(abs(ref["metrics"][k]), 1e-12)
                                     for k in shared), default=None)
            r["agrees"] = bool(shared) and r["max_rel_diff"] <= AGREE_REL
            r["speedup_eval"] = ref["eval_s"] / r["eval_s"]
            r["speedup_process"] = ref["process_s"] / r["process_s"]
            r["memory_fraction"] = r["peak_rss_mib"] / ref["peak_rss_mib"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="full: the committed run (about 6 min on an idle 2-core CPU); small: a smoke test")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--runners", nargs="+", default=RUNNERS)
    p.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    p.add_argument("--no-decode", action="store_true", help="skip the batch-1 decode / memory bandwidth section")
    p.add_argument("--no-ceilings", action="store_true",
                   help="skip the compute roof (matrix-product peak, rolling FLOPs) and memory floor sections")
    p.add_argument("--output", type=Path, default=REPO / "results/bench-lmeval",
                   help="folder for bench_lmeval.json and bench_lmeval.md (default results/bench-lmeval/)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args.child)

    size = SIZES[args.size]
    hf_directory()  # converted once, before anything is timed
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lmeval-") as tmp:
        sizes = write_tasks(Path(tmp), size)
        for task in args.tasks:
            for runner in args.runners:
                print(f"bench_lmeval: {runner} on {task} ...", file=sys.stderr, flush=True)
                report = run_child([runner, tmp, task, str(args.batch_size)])
                rows.append({"task": task, "runner": runner, **report})
                print(f"bench_lmeval:   {json.dumps(report['metrics'])}, eval {report['eval_s']:.1f} s, "
                      f"process {report['process_s']:.1f} s, peak {report['peak_rss_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
        ceilings_child = None
        if not args.no_ceilings:  # needs the task files: the rolling windows are counted from them
            print("bench_lmeval: memory floor, rolling FLOPs and matrix-product peak ...", file=sys.stderr, flush=True)
            ceilings_child = run_child(["ceilings", tmp, str(args.batch_size)])
    decode = None
    if not args.no_decode:
        print("bench_lmeval: scratch float32 batch-1 decode and memory bandwidth ...", file=sys.stderr, flush=True)
        decode = run_child(["decode", str(size.decode_tokens), str(size.decode_repetitions)])
    compare(rows)
    kernels = sorted({r["kernels"] for r in rows if r.get("kernels") and r["runner"].startswith("scratch:")})
    result = {"size": args.size, "size_settings": asdict(size), "sizes": sizes, "batch_size": args.batch_size,
              "agree_rel": AGREE_REL, "machine": machine_report(), "scratch_kernels": kernels,
              "rows": rows, "decode": decode, "ceilings_child": ceilings_child,
              "ceilings": None if ceilings_child is None else ceilings(rows, ceilings_child),
              "total_s": time.perf_counter() - started}
    report = render(result)
    print(report)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bench_lmeval.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "bench_lmeval.md").write_text(report + "\n")
    print(f"bench_lmeval: wrote {args.output / 'bench_lmeval.json'} and bench_lmeval.md", file=sys.stderr)
    disagree = [f"{r['runner']} on {r['task']}" for r in rows if r.get("agrees") is False]
    if disagree:
        print(f"bench_lmeval: numbers differ from lm-eval's beyond {AGREE_REL:g}: {', '.join(disagree)}", file=sys.stderr)
        return 1
    return 0


def render(result: dict) -> str:
    """The markdown report: machine, data, one row per (task, runner), the decode section."""
    m, s = result["machine"], result["sizes"]
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in m["flags"].items())
    env = m["kernels_env"] or "unset"
    lines = [f"machine: {m['summary']}", f"CPU flags: {flags}",
             f"scratch kernels: {', '.join(result['scratch_kernels']) or 'not run'} (HARNESS_CPU_KERNELS {env})",
             f"size {result['size']}: peer_rolling {s['peer_rolling']} articles ({s['words']} words); "
             f"peer_mc and peer_mc_3shot {s['peer_mc']} questions x 4 choices; peer_gen {s['peer_gen']} questions, "
             f"at most {s['max_gen_toks']} new tokens; float32, batch size {result['batch_size']}, no response cache; "
             f"whole run {result['total_s'] / 60:.1f} min", "",
             "| task | runner | metrics | max rel. diff from lm-eval | eval s | process s | peak RSS MiB "
             "| speedup, eval | speedup, process | memory / lm-eval's |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        shown = ", ".join(f"{k} {v:.6g}" for k, v in sorted(r["metrics"].items()))
        if r["runner"] == "lm-eval" or "max_rel_diff" not in r:
            diff = speed = whole = mem = ""
        else:
            diff = "no shared metric" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
            if r["agrees"] is False:
                diff += " DIFFERS"
            speed, whole = f"{r['speedup_eval']:.2f}x", f"{r['speedup_process']:.2f}x"
            mem = f"{r['memory_fraction']:.2f}"
        lines.append(f"| {r['task']} | {r['runner']} | {shown} | {diff} | {r['eval_s']:.1f} | {r['process_s']:.1f} "
                     f"| {r['peak_rss_mib']:.0f} | {speed} | {whole} | {mem} |")
    d = result["decode"]
    if d:
        b = d["bandwidth"]
        lines += ["", f"scratch:{MODEL} float32 batch-1 greedy decode ({d['new_tokens']} new tokens, best of "
                      f"{len(d['tokens_per_s_runs'])}) against the memory bandwidth measured here "
                      f"(best of {b['repetitions']} passes over {b['size_mib']} MiB, {b['threads']} threads):", "",
                  "| kernels | decode tok/s | weights read per token MB | implied GB/s | measured read GB/s "
                  "| measured copy GB/s | fraction of the limit |",
                  "|---|---:|---:|---:|---:|---:|---:|",
                  f"| {d['kernels']} | {d['tokens_per_s']:.1f} | {d['weight_bytes_per_token'] / 1e6:.0f} "
                  f"| {d['implied_gb_s']:.1f} | {b['read_gb_s']:.1f} | {b['copy_gb_s']:.1f} "
                  f"| {d['fraction_of_limit']:.2f} |"]
    if result.get("ceilings"):
        lines += render_ceilings(result["ceilings"], result["ceilings_child"], MODEL)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
