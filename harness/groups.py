"""Group scores as lm-evaluation-harness 0.4.13 computes them from `aggregate_metric_list`.

Its Group.aggregate (api/group.py) reads every leaf task under the group, nested groups
flattened: `weight_by_size: true` (the default) weights each task by its document count, `false`
takes the plain mean over the tasks; a task without the metric is left out (lm-eval warns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class GroupPlan:
    name: str
    children: list[tuple[str, str]]  # ("task" | "group", name), in the group file's order
    aggregate: list[dict[str, Any]] = field(default_factory=list)
    alias: str | None = None


def leaf_tasks(name: str, plans: dict[str, GroupPlan], seen: frozenset[str] = frozenset()) -> list[str]:
    out: list[str] = []
    for kind, child in plans[name].children:
        if kind == "task":
            out.append(child)
        elif child in plans and child not in seen:
            out.extend(leaf_tasks(child, plans, seen | {name}))
    return out


def group_scores(name: str, plans: dict[str, GroupPlan], tasks: dict[str, Any]) -> dict[str, Any]:
    """{metric: {value, n, tasks, higher_is_better, weight_by_size}} for one group, from the task
    records of one model's results."""
    leaves = leaf_tasks(name, plans)
    out: dict[str, Any] = {}
    for agg in plans[name].aggregate:
        metric = agg["metric"]
        weighted = bool(agg.get("weight_by_size", True))
        have = [(t, tasks[t]["metrics"][metric]) for t in leaves
                if t in tasks and tasks[t].get("metrics", {}).get(metric, {}).get("value") is not None]
        if not have:
            continue
        sizes = [m["n"] if weighted else 1 for _, m in have]
        value = sum(m["value"] * s for (_, m), s in zip(have, sizes)) / sum(sizes)
        out[metric] = {"value": value, "n": sum(m["n"] for _, m in have), "tasks": [t for t, _ in have],
                       "weight_by_size": weighted, "higher_is_better": have[0][1].get("higher_is_better", True)}
    return out
