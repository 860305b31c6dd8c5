"""`harness bench`: speed and memory of models and backends, written beside quality results.

    harness bench --model hf:smollm2-135m --model llamacpp:smollm2-135m [--prompt-lengths 128 512]
                  [--batch-sizes 1 8] [--new-tokens 64] [--repetitions 3] [--warmup 1] [--device cpu|cuda]

Each model is measured in a fresh process (its load time and peak memory are its own): load
time, then per shape (prompt length x batch size, new tokens) warm-up runs and timed repetitions of
greedy generation: time to first token, prefill and decode tokens/s, requests/s, peak memory.
The table shows medians over the repetitions with their half-range; the results file
(`"kind": "benchmark"`) goes to --output and every reporter command reads it beside `harness run`
results. The measurement itself is in harness/benchmark/.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from harness.benchmark.measure import BenchSettings
from harness.redact import redact_argv

HELP = "measure speed and memory of models and backends"
_DEFAULTS = BenchSettings()


def _positive_list(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", action="append", dest="models", metavar="SPEC",
                   help="model spec, e.g. hf:smollm2-135m, scratch:smollm2-135m, llamacpp:smollm2-135m, "
                        "llamacpp:FILE.gguf; repeat to compare models and backends")
    p.add_argument("--prompt-lengths", nargs="+", type=_positive_list, default=_DEFAULTS.prompt_lengths, metavar="N",
                   help="prompt lengths in tokens (default: %(default)s; the common standard: 128 1024)")
    p.add_argument("--batch-sizes", nargs="+", type=_positive_list, default=_DEFAULTS.batch_sizes, metavar="B",
                   help="batch sizes (default: %(default)s; standard: 1 8)")
    p.add_argument("--new-tokens", type=_positive_list, default=_DEFAULTS.new_tokens, metavar="N",
                   help="tokens generated per request, EOS ignored (default: %(default)s; standard: 128)")
    p.add_argument("--repetitions", "-r", type=_positive_list, default=_DEFAULTS.repetitions, metavar="R",
                   help="timed runs per shape; figures are their median (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=_DEFAULTS.warmup, metavar="W",
                   help="untimed runs per shape before the timed ones (default: %(default)s)")
    p.add_argument("--load-repetitions", type=_positive_list, default=_DEFAULTS.load_repetitions, metavar="R",
                   help="fresh processes that load each model; load time is their median (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA where torch sees a GPU)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype for hf and scratch (llamacpp runs the file's quantization)")
    p.add_argument("--threads", type=_positive_list, metavar="N",
                   help="CPU threads for torch and llama.cpp (default: torch's default; llama.cpp: the usable cores)")
    p.add_argument("--output", default="runs", metavar="DIR", help="where the results JSON goes (default runs/)")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh one per model (load time and memory less honest)")
    p.add_argument("--timeout", type=float, default=_DEFAULTS.timeout, metavar="S",
                   help="seconds one model may take before it is stopped (default: %(default)s)")
    p.add_argument("--show", nargs="+", metavar="RESULTS.json", help="print the table of benchmark results files again")


def run(args: argparse.Namespace) -> int:
    from harness.benchmark.suite import benchmark
    from harness.benchmark.table import bench_table
    from harness.errors import HarnessError
    from harness.results import load_results

    if args.show:
        for path in args.show:
            data = load_results(path)
            if data.kind != "benchmark":
                raise HarnessError(f"{path}: not a benchmark results file (kind {data.kind!r}); use harness show")
            print(bench_table(data))
        return 0
    if not args.models:
        raise HarnessError("give at least one --model SPEC to benchmark (e.g. --model llamacpp:smollm2-135m)")
    settings = BenchSettings(prompt_lengths=args.prompt_lengths, batch_sizes=args.batch_sizes,
                             new_tokens=args.new_tokens, repetitions=args.repetitions, warmup=args.warmup,
                             load_repetitions=args.load_repetitions, device=args.device, dtype=args.dtype,
                             threads=args.threads, timeout=args.timeout)
    results = benchmark(args.models, settings, output_dir=args.output, in_process=args.in_process,
                        command=shlex.join(redact_argv(["harness", *sys.argv[1:]])))
    print(bench_table(results))
    if results.path:
        print(f"\nresults: {results.path}")
    return 1 if results.errors else 0
