"""`harness tasks`: list tasks with their output type, metrics, size and description, then how
many are usable and why the others are not."""

from __future__ import annotations

import argparse
import fnmatch
import sys

from harness.errors import HarnessError

HELP = "list tasks: name, output type, metrics, size, description"


def add_task_code(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-task-code", action="store_true",
                   help="run the Python that task files name with `!function` (lm-evaluation-harness tasks); "
                        "results record a hash of every code file that ran")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", help="only tasks matching these names, tags or globs")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAML files")
    p.add_argument("--data-dir", metavar="DIR", help="local copies of hub datasets: DIR/<task>/<split>.jsonl")
    p.add_argument("--unavailable", action="store_true", help="list the tasks that cannot be used, each with its reason")
    add_task_code(p)


def run(args: argparse.Namespace) -> int:
    from harness.registry import TaskRegistry

    registry = TaskRegistry(args.include_path, trust_task_code=args.trust_task_code)
    if args.unavailable:
        registry.validate_all()
        for name, reason in sorted(registry.unavailable.items()):
            if not args.patterns or any(fnmatch.fnmatch(name, p) for p in args.patterns):
                print(f"{name}: {reason}")
        return 0
    configs = registry.select(args.patterns) if args.patterns else list(registry.configs.values())
    _print_table(configs, args.data_dir)
    if registry.groups and not args.patterns:
        shown = ", ".join(f"{g.name} ({len(g.tasks)})" for g in list(registry.groups.values())[:40])
        more = f" and {len(registry.groups) - 40} more" if len(registry.groups) > 40 else ""
        print(f"\ngroups: {shown}{more}")
    for note in registry.notes[:5]:
        print(f"note: {note}", file=sys.stderr)
    if len(registry.notes) > 5:
        print(f"note: {len(registry.notes) - 5} more notes like these (names defined twice, shadowed tasks, templates)", file=sys.stderr)
    if not args.patterns:
        _print_summary(registry)
    return 0


def _print_table(configs: list, data_dir: str | None) -> None:  # noqa: ANN001
    from harness.data import is_local
    from harness.report.text_tables import text_table
    from harness.task import Task

    rows = []
    for c in configs:
        # Counting a hub dataset's rows would download it: show where it comes from instead.
        if is_local(c, data_dir):
            try:
                size = str(len(Task(c, data_dir=data_dir).docs()))
            except HarnessError:
                size = "(error)"
        else:
            size = "(hub)"
        about = c.about or c.task_alias or ""
        rows.append([c.task, c.output_type, ",".join(m.metric for m in c.metric_list), size, c.language,
                     ",".join(c.tag), about if len(about) <= 72 else about[:71] + "…"])
    print(text_table(["task", "output type", "metrics", "size", "lang", "tags", "description"], rows, "lllrlll"))


def _print_summary(registry) -> None:  # noqa: ANN001
    summary = registry.summary()
    line = f"\n{summary['usable']} tasks usable, {summary['groups']} groups, {summary['unavailable']} unavailable"
    if not summary["unavailable"]:
        print(line)
        return
    print(line + " (`harness tasks --unavailable` lists them with their reasons):")
    for reason, names in list(summary["by_reason"].items())[:12]:
        print(f"  {len(names):>6}  {reason}")
    rest = list(summary["by_reason"].values())[12:]
    if rest:
        print(f"  {sum(len(n) for n in rest):>6}  other reasons ({len(rest)})")
