"""`harness tasks`: list tasks with their output type, metrics, size and description."""

from __future__ import annotations

import argparse
import sys

from harness.errors import HarnessError

HELP = "list tasks: name, output type, metrics, size, description"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", help="only tasks matching these names, tags or globs")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAML files")
    p.add_argument("--data-dir", metavar="DIR", help="local copies of hub datasets: DIR/<task>/<split>.jsonl")


def run(args: argparse.Namespace) -> int:
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
