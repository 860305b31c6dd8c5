"""Finds task files (tasks/ plus --include-path folders and $HARNESS_INCLUDE_PATH) and selects
tasks by name, tag, group or glob."""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.config import TaskConfig, load_task_config
from harness.errors import HarnessError

INCLUDE_ENV = "HARNESS_INCLUDE_PATH"
BUILTIN_TASKS = Path(__file__).resolve().parent.parent / "tasks"


@dataclass
class Group:
    name: str
    tasks: list[str]
    source_file: str
    about: str = ""
    limit: int | None = None  # documents per member task when run through this group
    member_limits: dict[str, int] | None = None  # per-member overrides of `limit`


class TaskRegistry:
    """All task configs and groups visible from the built-in folder and the include paths."""

    def __init__(self, include_paths: list[str] | None = None):
        self.dirs = task_dirs(include_paths)
        self.configs: dict[str, TaskConfig] = {}
        self.groups: dict[str, Group] = {}
        self.broken: dict[str, HarnessError] = {}
        for folder in self.dirs:
            for path in sorted(folder.rglob("*.y*ml")):
                if path.suffix in (".yaml", ".yml"):
                    self._add(path)

    def _add(self, path: Path) -> None:
        try:
            head = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError):
            head = None  # load_task_config reports the exact problem
        if isinstance(head, dict) and "group" in head and "task" in head and isinstance(head["task"], list):
            limit = head.get("limit")
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise HarnessError(f"{path}: key 'limit' must be a positive integer")
            name = str(head["group"])
            members, limits = [], {}
            for item in head["task"]:
                if isinstance(item, dict):
                    member, n = item.get("task"), item.get("limit")
                    if not isinstance(member, str) or not isinstance(n, int) or n < 1:
                        raise HarnessError(f"{path}: a task entry must be a name or {{task: NAME, limit: N}}")
                    members.append(member)
                    limits[member] = n
                else:
                    members.append(str(item))
            self.groups[name] = Group(name, members, str(path), str(head.get("about", "")), limit, limits)
            return
        try:
            config = load_task_config(path)
        except HarnessError as err:
            # A file that parses but fails validation is reported when it is selected, so one
            # broken task never blocks the others; a file with no readable name fails now.
            name = head.get("task") if isinstance(head, dict) else None
            if not isinstance(name, str):
                raise
            self.broken[name] = err
            return
        if config.task in self.configs and self.configs[config.task].source_file != str(path):
            other = self.configs[config.task].source_file
            raise HarnessError(f"{path}: task name {config.task!r} is already defined in {other}; rename one")
        self.configs[config.task] = config

    def tags(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for config in self.configs.values():
            for tag in config.tag:
                out.setdefault(tag, []).append(config.task)
        return out

    def select(self, patterns: list[str]) -> list[TaskConfig]:
        """Tasks for each pattern: a task name, a tag, a group, a glob over names, or a YAML path."""
        return [config for config, _ in self.select_with_limits(patterns)]

    def select_with_limits(self, patterns: list[str]) -> list[tuple[TaskConfig, int | None]]:
        """Like `select`, with the document limit of the group that named each task (or None)."""
        chosen: dict[str, tuple[TaskConfig, int | None]] = {}
        tags = self.tags()
        for pattern in patterns:
            group = self.groups.get(pattern)
            for name in self._expand(pattern, tags):
                limit = ((group.member_limits or {}).get(name, group.limit)) if group else None
                chosen.setdefault(name, (self.configs[name], limit))
        return list(chosen.values())

    def _expand(self, pattern: str, tags: dict[str, list[str]], depth: int = 0) -> list[str]:
        if depth > 8:
            raise HarnessError(f"group {pattern!r} includes itself")
        if pattern.endswith((".yaml", ".yml")) and Path(pattern).is_file():
            config = load_task_config(pattern)
            self.configs[config.task] = config
            return [config.task]
        if pattern in self.broken:
            raise self.broken[pattern]
        if pattern in self.configs:
            return [pattern]
        if pattern in self.groups:
            return [n for member in self.groups[pattern].tasks for n in self._expand(member, tags, depth + 1)]
        if pattern in tags:
            return sorted(tags[pattern])
        matches = sorted(n for n in self.configs if fnmatch.fnmatch(n, pattern))
        if matches:
            return matches
        known = list(self.configs) + list(self.groups) + list(tags)
        close = difflib.get_close_matches(pattern, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `harness tasks` lists them"
        raise HarnessError(f"unknown task {pattern!r}: no task, tag, group or glob matches it{hint}")

    def groups_of(self, tasks: list[str]) -> dict[str, list[str]]:
        """Groups and tags whose every member is among `tasks` (for group aggregates)."""
        selected = set(tasks)
        out: dict[str, list[str]] = {}
        for name, members in self.tags().items():
            if len(members) > 1 and set(members) <= selected:
                out[name] = sorted(members)
        for name, group in self.groups.items():
            members = [n for m in group.tasks for n in self._expand(m, self.tags())]
            if set(members) <= selected:
                out[name] = members
        return out


def task_dirs(include_paths: list[str] | None = None) -> list[Path]:
    dirs = [BUILTIN_TASKS] if BUILTIN_TASKS.is_dir() else []
    extra = list(include_paths or [])
    env = os.environ.get(INCLUDE_ENV)
    if env:
        extra.extend(p for p in env.split(os.pathsep) if p)
    for item in extra:
        path = Path(item).expanduser()
        if not path.is_dir():
            raise HarnessError(f"include path {item} is not a folder; give a folder of task YAML files")
        if path.resolve() not in [d.resolve() for d in dirs]:
            dirs.append(path)
    return dirs
