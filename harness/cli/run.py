"""`harness run`: evaluate models on tasks and print a results table."""

from __future__ import annotations

import argparse
import shlex
import sys

from harness.cli.common import positive_or_auto
from harness.cli.tasks import add_task_code
from harness.redact import redact_argv

HELP = "evaluate models on tasks and print a results table"
DESCRIPTION = "Evaluate each --model on each task. With no arguments: the `core` suite on scratch:smollm2-135m."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", action="append", dest="models", metavar="SPEC",
                   help="model spec: a built-in name (smollm2-135m, gemma3-270m), a local HF directory, a .gguf file "
                        "or a hub id, optionally prefixed by a backend (hf:, scratch:, api:); repeat to compare models")
    p.add_argument("--tasks", "-t", nargs="+", metavar="TASK", help="task names, tags, groups or globs (default: core)")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="extra folder of task YAML files (also $HARNESS_INCLUDE_PATH)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N documents of each task")
    p.add_argument("--seed", type=int, help="seed for few-shot sampling, sampled generation and bootstrap CIs")
    p.add_argument("--batch-size", type=positive_or_auto, default=8, metavar="B|auto",
                   help="batch size, or auto (on CUDA: halve and retry on out-of-memory); default 8")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--output", default="runs", metavar="DIR", help="where results JSON and samples go (default runs/)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="response cache folder (default: $HARNESS_CACHE_DIR or ~/.cache/harness)")
    p.add_argument("--data-dir", metavar="DIR", help="local copies of hub datasets: DIR/<task>/<split>.jsonl or "
                   "DIR/<dataset_path>/<dataset_name or default>/<split>.jsonl (also $HARNESS_DATA_DIR)")
    p.add_argument("--trust-remote-code", action="store_true", help="let transformers run a hub model's own Python code")
    add_task_code(p)
    p.add_argument("--allow-external-data", action="store_true",
                   help="let task files read data_files outside their own folder and --data-dir")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs (default 1000)")


def run(args: argparse.Namespace) -> int:
    from harness.report.table import results_table
    from harness.runner import RunOptions, evaluate

    options = RunOptions(
        limit=args.limit, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
        output_dir=args.output, use_cache=not args.no_cache, cache_dir=args.cache_dir,
        include_paths=args.include_path, data_dir=args.data_dir, trust_remote_code=args.trust_remote_code,
        trust_task_code=args.trust_task_code, allow_external_data=args.allow_external_data,
        n_boot=args.bootstrap, command=shlex.join(redact_argv(["harness", *sys.argv[1:]])),
    )
    results = evaluate(args.models, args.tasks, options)
    print(results_table(results))
    if results.path:
        print(f"\nresults: {results.path}")
    return 0
