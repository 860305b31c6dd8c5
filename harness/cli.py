"""The `harness` command: thin argument parsing over the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from harness.errors import HarnessError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error the CLI prints."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def _positive_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("batch size must be at least 1")
    return value


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="evaluate models on tasks and print a results table",
                       description="Evaluate each --model on each task. With no arguments: the `core` suite on scratch:smollm2-135m.")
    p.add_argument("--model", "-m", action="append", dest="models", metavar="SPEC",
                   help="model spec: a built-in name (smollm2-135m, gemma3-270m), a local HF directory, a .gguf file "
                        "or a hub id, optionally prefixed by a backend (hf:, scratch:, api:); repeat to compare models")
    p.add_argument("--tasks", "-t", nargs="+", metavar="TASK", help="task names, tags, groups or globs (default: core)")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="extra folder of task YAML files (also $HARNESS_INCLUDE_PATH)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N documents of each task")
    p.add_argument("--seed", type=int, help="seed for few-shot sampling, sampled generation and bootstrap CIs")
    p.add_argument("--batch-size", type=_positive_or_auto, default=8, metavar="B|auto",
                   help="batch size, or auto (on CUDA: halve and retry on out-of-memory); default 8")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--output", default="runs", metavar="DIR", help="where results JSON and samples go (default runs/)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="response cache folder (default: $HARNESS_CACHE_DIR or ~/.cache/harness)")
    p.add_argument("--data-dir", metavar="DIR", help="local copies of hub datasets: DIR/<task>/<split>.jsonl (also $HARNESS_DATA_DIR)")
    p.add_argument("--trust-remote-code", action="store_true", help="let transformers run a hub model's own Python code")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs (default 1000)")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.report.table import results_table
    from harness.runner import RunOptions, evaluate

    options = RunOptions(
        limit=args.limit, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
        output_dir=args.output, use_cache=not args.no_cache, cache_dir=args.cache_dir,
        include_paths=args.include_path, data_dir=args.data_dir, trust_remote_code=args.trust_remote_code,
        n_boot=args.bootstrap, command=shlex.join(["harness", *sys.argv[1:]]),
    )
    results = evaluate(args.models, args.tasks, options)
    print(results_table(results))
    if results.get("path"):
        print(f"\nresults: {results['path']}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.data import is_local
    from harness.registry import TaskRegistry
    from harness.report.table import text_table
    from harness.task import Task

    registry = TaskRegistry(args.include_path)
    configs = registry.select(args.patterns) if args.patterns else sorted(registry.configs.values(), key=lambda c: c.task)
    rows = []
    for c in configs:
        # Counting a hub dataset's rows would download it: show where it comes from instead.
        if is_local(c, args.data_dir):
            try:
                size = str(len(Task(c, data_dir=args.data_dir).docs()))
            except HarnessError:
                size = "(error)"
        else:
            size = "(hub)"
        rows.append([c.task, c.output_type, ",".join(m.metric for m in c.metric_list), size, c.language,
                     ",".join(c.tag), c.about if len(c.about) <= 72 else c.about[:71] + "…"])
    print(text_table(["task", "output type", "metrics", "size", "lang", "tags", "description"], rows, "lllrlll"))
    for name, err in sorted(registry.broken.items()):
        print(f"broken task {name}: {err}", file=sys.stderr)
    if registry.groups:
        print("\ngroups: " + ", ".join(f"{g.name} ({len(g.tasks)})" for g in registry.groups.values()))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models.zoo import ZOO, is_installed
    from harness.report.table import text_table

    rows = []
    for z in ZOO.values():
        installed = is_installed(z.name)
        path = str(z.locate()) if installed and z.name != "gemma3-270m" else (z.package if installed else "-")
        rows.append([z.name, z.architecture, f"{z.n_params / 1e6:.0f}M", "yes" if installed else f"no: {z.install}", path, z.description])
    print(text_table(["name", "architecture", "params", "installed", "file", "description"], rows, "llrlll"))
    print("\nAny local HF directory, .gguf file or hub id works too; prefix a backend: hf: (default), scratch:, api:.")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from harness.report.table import results_table
    from harness.results import load_results

    for path in args.results:
        print(results_table(load_results(path)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Evaluate and benchmark language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (loading, caching)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run(sub)
    p = sub.add_parser("tasks", help="list tasks: name, output type, metrics, size, description")
    p.add_argument("patterns", nargs="*", help="only tasks matching these names, tags or globs")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAML files")
    p.add_argument("--data-dir", metavar="DIR", help="local copies of hub datasets: DIR/<task>/<split>.jsonl")
    sub.add_parser("models", help="list the built-in models and whether their weights are installed")
    p = sub.add_parser("show", help="print the table of a results file again")
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # not part of this installation
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


# Commands implemented beside the library they drive: each module has add_arguments(parser)
# and run(args) -> exit code.
SUBCOMMANDS = {
    "score": ("harness.metrics.scoring", "score predictions you already have against references, with 95%% CIs"),
    "report": ("harness.report.cli_report", "tables of results files: models by (task, metric) with CIs"),
    "leaderboard": ("harness.report.cli_leaderboard", "rank models by mean win rate and normalized score"),
    "compare": ("harness.report.cli_compare", "compare a candidate results file with a baseline (regression gate)"),
    "plot": ("harness.report.cli_plot", "plots: score against parameter count, grouped bars per task"),
    "bench": ("harness.bench", "measure speed and memory of models and backends"),
    "serve": ("harness.serve", "serve a model over an OpenAI-compatible HTTP API"),
}


COMMANDS = {"run": cmd_run, "tasks": cmd_tasks, "models": cmd_models, "show": cmd_show}


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    from harness import distributed

    distributed.finish(code)  # under torchrun: leave the process group together, then exit
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    command = args.command or "run"
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        if command in COMMANDS:
            return COMMANDS[command](args)
        return importlib.import_module(SUBCOMMANDS[command][0]).run(args)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished batches are cached; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
