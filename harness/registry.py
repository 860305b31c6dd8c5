"""Finds task files (tasks/ plus --include-path folders and $HARNESS_INCLUDE_PATH) and selects
tasks by name, tag, group or glob, with lm-evaluation-harness's group semantics.

The index reads every YAML file once (includes merged, nothing imported) and keeps the raw keys;
a task is validated when it is selected or listed. A file that cannot be used never stops the
others: it is recorded in `unavailable` with its one-line reason, and selecting it (by name, tag,
group or glob) raises that reason.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import OWN_KEYS, TaskConfig, load_task_config, parse_task_config
from harness.errors import HarnessError
from harness.groups import GroupPlan
from harness import taskfile
from harness.taskfile import load_raw_flagged

INCLUDE_ENV = "HARNESS_INCLUDE_PATH"
# A wheel carries the repository's tasks/ as harness/_tasks (setup.py); a checkout has them beside
# the package.
_PACKAGED_TASKS = Path(__file__).resolve().parent / "_tasks"
BUILTIN_TASKS = _PACKAGED_TASKS if _PACKAGED_TASKS.is_dir() else Path(__file__).resolve().parent.parent / "tasks"
GROUP_FIELDS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata"}
OWN_GROUP_FIELDS = {"about", "limit", "tag"}  # this project's group keys (not task overrides)
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}


@dataclass
class Group:
    name: str
    tasks: list[Any]  # the `task:` entries: names, or mappings with overrides / inline groups
    source_file: str
    about: str = ""
    limit: int | None = None  # documents per member task when run through this group
    alias: str | None = None
    aggregate_metric_list: list[dict[str, Any]] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # group-level task keys

    @property
    def member_limits(self) -> dict[str, int]:
        return {m["task"]: m["limit"] for m in self.tasks if isinstance(m, dict) and "limit" in m and "task" in m}


@dataclass
class _Entry:
    name: str
    path: str
    raw: dict[str, Any]  # merged keys, shared with the parse cache: read only
    tags: list[str]
    builtin: bool
    has_code: bool = True  # a `!function` somewhere in its include chain


@dataclass
class Selected:
    """One task chosen by a pattern: its config, the document limit of the group that named it."""

    config: TaskConfig
    limit: int | None = None
    groups: list[str] = field(default_factory=list)


class TaskRegistry:
    """All task configs and groups visible from the built-in folder and the include paths."""

    def __init__(self, include_paths: list[str] | None = None, *, trust_task_code: bool = False):
        self.trust_task_code = trust_task_code
        self.dirs = task_dirs(include_paths)
        self.entries: dict[str, _Entry] = {}
        self.groups: dict[str, Group] = {}
        self.unavailable: dict[str, str] = {}  # task name (or file, when it has no name) -> reason
        self.notes: list[str] = []
        self._configs: dict[str, TaskConfig] = {}
        self._tags: dict[str, list[str]] | None = None
        for i, folder in enumerate(self.dirs):
            self._index_folder(folder, builtin=i == 0 and folder == BUILTIN_TASKS)
        self.tags()  # fixed now, so a tag still names members that later fail validation

    # -- index ----------------------------------------------------------------------------------

    def _index_folder(self, folder: Path, *, builtin: bool) -> None:
        taskfile.preload(folder)
        try:
            self._index_files(folder, builtin=builtin)
        finally:
            taskfile.save(folder)

    def _index_files(self, folder: Path, *, builtin: bool) -> None:
        seen: dict[str, str] = {}
        found = []
        for top, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            found.extend(f"{top}/{f}" for f in files if f.endswith((".yaml", ".yml")))
        for path in sorted(found):
            try:
                raw, has_code = load_raw_flagged(path, copy_values=False)
            except HarnessError as err:
                self.unavailable[path] = str(err)
                continue
            name = raw.get("group") if "group" in raw and "class" not in raw else raw.get("task")
            if not isinstance(name, str):  # an include template (lm-evaluation-harness skips these too)
                self.notes.append(f"{path}: neither a task (key 'task') nor a group (key 'group'): skipped")
                continue
            if name in seen:
                self.notes.append(f"{path}: {name!r} is already defined in {seen[name]}; this file is skipped")
                continue
            seen[name] = path
            if name in self.entries or name in self.groups or name in self.unavailable:
                other = self.entries[name].path if name in self.entries else self.groups[name].source_file if name in self.groups else "another folder"
                self.notes.append(f"{path} shadows {name!r} from {other}")
                self.entries.pop(name, None)
                self.groups.pop(name, None)
                self.unavailable.pop(name, None)
            if "group" in raw and "class" not in raw:
                self._add_group(name, raw, path)
            else:
                tags = raw.get("tag") or []
                tags = [tags] if isinstance(tags, str) else [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
                self.entries[name] = _Entry(name, path, raw, tags, builtin, has_code)

    def _add_group(self, name: str, raw: dict[str, Any], path: str) -> None:
        members = raw.get("task")
        members = [members] if isinstance(members, str) else members
        limit = raw.get("limit")
        agg = raw.get("aggregate_metric_list")
        agg = [agg] if isinstance(agg, dict) else agg
        problem = None
        if not isinstance(members, list) or not members:
            problem = "key 'task' must list the group's tasks"
        elif limit is not None and (not isinstance(limit, int) or limit < 1):
            problem = "key 'limit' must be a positive integer"
        elif agg is not None and not (isinstance(agg, list) and all(isinstance(a, dict) and "metric" in a for a in agg)):
            problem = "aggregate_metric_list entries must be mappings with a 'metric'"
        elif agg and any(a.get("aggregation", "mean") != "mean" for a in agg):
            problem = "aggregate_metric_list: only aggregation 'mean' exists (as in lm-evaluation-harness)"
        if problem:
            self.unavailable[name] = f"{path}: {problem}"
            return
        overrides = {k: v for k, v in raw.items() if k not in GROUP_FIELDS | OWN_GROUP_FIELDS}
        self.groups[name] = Group(name, members, path, str(raw.get("about", "")), limit,
                                  raw.get("group_alias"), agg, overrides)

    # -- configs --------------------------------------------------------------------------------

    def config(self, name: str) -> TaskConfig:
        """The validated config of one indexed task (its reason raised if it is unavailable)."""
        if name in self.unavailable:
            raise HarnessError(_unavailable(name, self.unavailable[name]))
        if name not in self._configs:
            entry = self.entries[name]
            try:
                self._configs[name] = self._parse(entry.raw, entry.path, entry.has_code)
            except HarnessError as err:
                self.unavailable[name] = str(err)
                del self.entries[name]
                raise HarnessError(_unavailable(name, str(err))) from None
        return self._configs[name]

    def _parse(self, raw: dict[str, Any], path: Path | str, has_code: bool = True) -> TaskConfig:
        # A shallow copy: parse_task_config copies every nested value it changes.
        return parse_task_config(dict(raw), str(path), trust_task_code=self.trust_task_code, has_code=has_code)

    def validate_all(self) -> None:
        """Validate every indexed task, moving the ones that fail to `unavailable`."""
        for name in list(self.entries):
            try:
                self.config(name)
            except HarnessError:
                pass

    @property
    def configs(self) -> dict[str, TaskConfig]:
        """Every usable task's config (validates the whole index)."""
        self.validate_all()
        return {name: self._configs[name] for name in sorted(self.entries)}

    def tags(self) -> dict[str, list[str]]:
        """Tag -> member tasks, unavailable members included (selecting the tag raises their reason)."""
        if self._tags is None:
            out: dict[str, list[str]] = {}
            for entry in self.entries.values():
                for tag in entry.tags:
                    out.setdefault(tag, []).append(entry.name)
            self._tags = {k: sorted(v) for k, v in out.items()}
        return self._tags

    # -- selection ------------------------------------------------------------------------------

    def select(self, patterns: list[str]) -> list[TaskConfig]:
        """Tasks for each pattern: a task name, a tag, a group, a glob over names, or a YAML path."""
        return [s.config for s in self.selection(patterns)]

    def select_with_limits(self, patterns: list[str]) -> list[tuple[TaskConfig, int | None]]:
        """Like `select`, with the document limit of the group that named each task (or None)."""
        return [(s.config, s.limit) for s in self.selection(patterns)]

    def selection(self, patterns: list[str]) -> list[Selected]:
        chosen: dict[str, Selected] = {}
        for pattern in patterns:
            for item in self._expand(pattern):
                if item.config.task in chosen:
                    chosen[item.config.task].groups.extend(g for g in item.groups if g not in chosen[item.config.task].groups)
                else:
                    chosen[item.config.task] = item
        return list(chosen.values())

    def _expand(self, pattern: str) -> list[Selected]:
        if pattern.endswith((".yaml", ".yml")) and Path(pattern).is_file():
            config = load_task_config(pattern, trust_task_code=self.trust_task_code)
            return [Selected(config)]
        if pattern in self.unavailable:
            raise HarnessError(_unavailable(pattern, self.unavailable[pattern]))
        if pattern in self.entries:
            return [Selected(self.config(pattern))]
        if pattern in self.groups:
            return self._expand_group(self.groups[pattern], {}, 0)
        tags = self.tags()
        if pattern in tags:
            return [Selected(self.config(n)) for n in tags[pattern]]
        files = sorted(f for f in self.unavailable if f.endswith((".yaml", ".yml")) and fnmatch.fnmatch(Path(f).stem, pattern))
        if files:  # a file too broken to have a name is found by its file name
            raise HarnessError(_unavailable(Path(files[0]).stem, self.unavailable[files[0]]))
        names = sorted(n for n in set(self.entries) | set(self.groups) | set(self.unavailable) if fnmatch.fnmatch(n, pattern))
        if names:
            out = []
            for name in names:
                out.extend(self._expand(name))  # an unavailable match raises its reason
            return out
        known = list(self.entries) + list(self.groups) + list(tags)
        close = difflib.get_close_matches(pattern, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `harness tasks` lists them"
        raise HarnessError(f"unknown task {pattern!r}: no task, tag, group or glob matches it{hint}")

    def _expand_group(self, group: Group, overrides: dict[str, Any], depth: int) -> list[Selected]:
        """lm-evaluation-harness's TaskFactory._build_group_members: names, tags, groups, inline
        mappings; group-level keys and the caller's overrides apply to every member."""
        if depth > 16:
            raise HarnessError(f"{group.source_file}: group {group.name!r} includes itself; remove the loop")
        merged = {**group.overrides, **overrides}
        out: list[Selected] = []
        for item in group.tasks:
            limit = group.limit
            if isinstance(item, str):
                base, item_overrides = item, merged
            elif isinstance(item, dict) and "group" in item:
                name = item["group"]
                inner = {k: v for k, v in item.items() if k != "group"}
                if name in self.groups:
                    out.extend(self._tagged(self._expand_group(self.groups[name], {**merged, **inner}, depth + 1), group.name))
                else:  # an inline group, namespaced as lm-evaluation-harness does
                    inline = Group(f"{group.name}::{name}", item.get("task") or [], group.source_file,
                                   aggregate_metric_list=item.get("aggregate_metric_list"),
                                   overrides={k: v for k, v in item.items() if k not in GROUP_FIELDS | OWN_GROUP_FIELDS})
                    if isinstance(inline.tasks, str):
                        inline.tasks = [inline.tasks]
                    self.groups.setdefault(inline.name, inline)
                    out.extend(self._tagged(self._expand_group(inline, merged, depth + 1), group.name))
                continue
            elif isinstance(item, dict) and isinstance(item.get("task"), str):
                base = item["task"]
                own = {k: v for k, v in item.items() if k != "limit"}
                item_overrides = {**merged, **own}
                if isinstance(item.get("limit"), int) and item["limit"] > 0:
                    limit = item["limit"]
                elif "limit" in item:
                    raise HarnessError(f"{group.source_file}: a task entry's 'limit' must be a positive integer")
            else:
                raise HarnessError(f"{group.source_file}: group {group.name!r}: entry {item!r} must be a name or a mapping with 'task' or 'group'")
            for selected in self._member(group, base, item_overrides, depth):
                if limit is not None and selected.limit is None:
                    selected.limit = limit
                out.append(selected)
        return self._tagged(out, group.name)

    def _member(self, group: Group, base: str, overrides: dict[str, Any], depth: int) -> list[Selected]:
        if base in self.unavailable:
            raise HarnessError(_unavailable(base, self.unavailable[base], via=group.name))
        if base in self.groups:
            return self._expand_group(self.groups[base], {k: v for k, v in overrides.items() if k != "task"}, depth + 1)
        tags = self.tags()
        names = [base] if base in self.entries else tags.get(base)
        if names is None:  # an inline task: its keys are the entry's own
            cfg = {**overrides, "task": f"{group.name}::{base}"}
            return [Selected(self._parse(cfg, group.source_file))]
        out = []
        for name in names:
            self.config(name)  # its own reason if the task itself is unusable
            if not overrides:
                out.append(Selected(self.config(name)))
                continue
            entry = self.entries[name]
            raw = {**entry.raw, **overrides, "task": name}
            if isinstance(entry.raw.get("metadata"), dict) and isinstance(overrides.get("metadata"), dict):
                raw["metadata"] = {**entry.raw["metadata"], **overrides["metadata"]}
            try:
                config = self._parse(raw, entry.path)
                # the file's own format decides lm-eval's metric conventions, not a group's overrides
                config.lm_eval_format = not (set(entry.raw) & OWN_KEYS)
                out.append(Selected(config))
            except HarnessError as err:
                raise HarnessError(f"{err} (with the keys group {group.name!r} sets in {group.source_file})") from None
        return out

    @staticmethod
    def _tagged(items: list[Selected], group: str) -> list[Selected]:
        for item in items:
            if group not in item.groups:
                item.groups.append(group)
        return items

    # -- groups in results ----------------------------------------------------------------------

    def groups_of(self, tasks: list[str]) -> dict[str, list[str]]:
        """Groups and tags whose every member is among `tasks` (for group aggregates)."""
        selected = set(tasks)
        out: dict[str, list[str]] = {}
        for name, members in self.tags().items():
            if len(members) > 1 and set(members) <= selected:
                out[name] = sorted(members)
        for name, group in list(self.groups.items()):
            try:
                members = [s.config.task for s in self._expand_group(group, {}, 0)]
            except HarnessError:
                continue
            if set(members) <= selected:
                out[name] = members
        return out

    def group_plans(self, tasks: list[str]) -> dict[str, GroupPlan]:
        """The groups (inline ones included) whose leaves all ran, with their direct children and
        aggregate_metric_list, for lm-evaluation-harness's group scores."""
        ran = set(tasks)
        plans: dict[str, GroupPlan] = {}
        for name in list(self.groups):
            try:
                leaves = {s.config.task for s in self._expand_group(self.groups[name], {}, 0)}
            except HarnessError:
                continue
            if leaves <= ran:
                plans[name] = self._plan(self.groups[name])
        return plans

    def _plan(self, group: Group) -> GroupPlan:
        children: list[tuple[str, str]] = []
        for item in group.tasks:
            if isinstance(item, dict) and "group" in item:
                name = item["group"]
                children.append(("group", name if name in self.groups else f"{group.name}::{name}"))
                continue
            base = item["task"] if isinstance(item, dict) else str(item)
            if base in self.groups:
                children.append(("group", base))
            elif base in self.entries or base in self.unavailable:
                children.append(("task", base))
            elif base in self.tags():
                children.extend(("task", n) for n in self.tags()[base])
            else:
                children.append(("task", f"{group.name}::{base}"))
        return GroupPlan(group.name, children, list(group.aggregate_metric_list or []), group.alias)

    def summary(self) -> dict[str, Any]:
        """Counts for `harness tasks`: usable tasks, groups, unavailable ones grouped by reason."""
        self.validate_all()
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.unavailable.items():
            by_reason.setdefault(reason_kind(reason), []).append(name)
        return {"usable": len(self.entries), "groups": len(self.groups), "unavailable": len(self.unavailable),
                "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -len(kv[1])))}


def reason_kind(reason: str) -> str:
    """A reason without its file and values, to group unavailable tasks (`key 'process_docs' is
    `!function utils.x` ...` -> `key 'process_docs' needs --trust-task-code`)."""
    text = reason.split(": ", 1)[1] if ": " in reason and reason.split(": ", 1)[0].endswith((".yaml", ".yml")) else reason
    if "--trust-task-code" in text and text.startswith("key "):
        return text.split(" is `", 1)[0] + " needs --trust-task-code"
    for marker in (" (known:", " (allowed:", "; known metrics:", " (it takes", "; did you mean", ", which does not exist"):
        text = text.split(marker, 1)[0]
    return text


def _unavailable(name: str, reason: str, via: str | None = None) -> str:
    where = f" (a member of {via!r})" if via else ""
    return f"task {name!r}{where} is unavailable: {reason}"


def task_dirs(include_paths: list[str] | None = None) -> list[Path]:
    dirs = [BUILTIN_TASKS] if BUILTIN_TASKS.is_dir() else []
    from harness.plugins import task_folders

    extra = [*(str(f) for f in task_folders()), *(include_paths or [])]
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
