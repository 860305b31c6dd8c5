"""Group scores: lm-evaluation-harness's `aggregate_metric_list` where a group file asks for one,
and otherwise a pooled score over the members that measure the same thing.

lm-eval's way (lm-eval 0.4.13 api/group.py, Group.aggregate): every leaf task under the group,
nested groups flattened; per metric and per filter (`filter_list`, or every filter the members
report), the mean of the task values, weighted by document counts (`weight_by_size: true`, the
default) or not; a task without the metric is left out. Its standard error is lm-eval's too:
`pooled_sample_stderr` for the weighted mean, `unweighted_mean_stderr` otherwise, from the
members' standard errors, and the 95% CI is value ± 1.96 standard errors.

Without `aggregate_metric_list` (this project's groups and tags), a metric is aggregated only
across members that are alike: the same metric with the same signature (tokenizer, options),
the same output type, the same language and the same application (a task's last tag). Then the
group's value is the metric computed over the members' documents pooled (corpus BLEU over the
joined corpus, perplexity over all the words, accuracy over all the documents), and its CI is the
metric's own bootstrap over the pooled documents. A metric the members measure differently (BLEU
on en→zh with the zh tokenizer beside fr→en with 13a; perplexity in two languages) gets no group
value; the reason is recorded (`group_notes`) instead of a number that averages unlike things.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.results import GroupMetric, TaskResult

Z95 = 1.959963984540054


@dataclass
class GroupPlan:
    name: str
    children: list[tuple[str, str]]  # ("task" | "group", name), in the group file's order
    aggregate: list[dict[str, Any]] = field(default_factory=list)
    alias: str | None = None


@dataclass
class MemberScores:
    """What pooling needs of one member task: its metric objects and per-document statistics
    (the primary filter's), by metric name."""

    metrics: dict[str, Any]
    stats: dict[str, list[Any]]


def leaf_tasks(name: str, plans: dict[str, GroupPlan], seen: frozenset[str] = frozenset()) -> list[str]:
    out: list[str] = []
    for kind, child in plans[name].children:
        if kind == "task":
            out.append(child)
        elif child in plans and child not in seen:
            out.extend(leaf_tasks(child, plans, seen | {name}))
    return out


def _by_filter(task: TaskResult) -> dict[str, dict[str, dict[str, Any]]]:
    """{lm-eval filter name: {metric name: metric record}} of one task ("none" without a filter_list)."""
    per = task.other.get("metrics_by_filter")
    if per:
        return {f: dict(ms) for f, ms in per.items()}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in task.metrics.values():
        out.setdefault(m.filter or "none", {})[m.name] = m.to_dict()
    return out


def pooled_sample_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float | None:
    """lm-eval's stderr of a size-weighted mean of task means (pooled variance)."""
    if sum(sizes) - len(sizes) <= 0:
        return None
    var = sum((n - 1) * s * s * n for n, s in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))


def unweighted_mean_stderr(stderrs: Sequence[float]) -> float:
    """lm-eval's stderr of the plain mean of k independent task means."""
    return math.sqrt(sum(s * s for s in stderrs)) / len(stderrs)


def lmeval_group_scores(name: str, plans: dict[str, GroupPlan], tasks: Mapping[str, TaskResult]) -> dict[str, GroupMetric]:
    """A group file's aggregate_metric_list, computed as lm-evaluation-harness does."""
    leaves = [t for t in leaf_tasks(name, plans) if t in tasks]
    per_task = {t: _by_filter(tasks[t]) for t in leaves}
    out: dict[str, GroupMetric] = {}
    for agg in plans[name].aggregate:
        metric = agg["metric"]
        weighted = bool(agg.get("weight_by_size", True))
        wanted = agg.get("filter_list")
        if isinstance(wanted, str):
            wanted = [wanted]
        filters = list(wanted) if wanted else sorted({f for t in leaves for f, ms in per_task[t].items() if metric in ms})
        for flt in filters:
            have = [(t, per_task[t][flt][metric]) for t in leaves
                    if per_task[t].get(flt, {}).get(metric, {}).get("value") is not None]
            if not have:
                continue
            sizes = [int(m.get("n") or 0) for _, m in have]
            weights = sizes if weighted else [1] * len(have)
            if sum(weights) == 0:
                continue
            value = sum(m["value"] * w for (_, m), w in zip(have, weights)) / sum(weights)
            stderrs = [m.get("stderr") for _, m in have]
            stderr = None
            if all(s is not None for s in stderrs):
                stderr = pooled_sample_stderr(stderrs, sizes) if weighted else unweighted_mean_stderr(stderrs)
            low, high = (value - Z95 * stderr, value + Z95 * stderr) if stderr is not None else (None, None)
            out_filter = None if flt == "none" else flt
            gm = GroupMetric(metric, value, stderr=stderr, ci_low=low, ci_high=high, n=sum(sizes),
                             higher_is_better=bool(have[0][1].get("higher_is_better", True)), filter=out_filter,
                             other={"aggregation": "lm-eval mean", "weight_by_size": weighted},
                             tasks=[t for t, _ in have])
            out[gm.key] = gm
    return out


def _alike_key(task: TaskResult, name: str) -> tuple:
    """What must agree for two members' values of metric `name` to be pooled: the signature the
    task recorded for it, its output type, language and application."""
    config = task.config or {}
    tags = config.get("tag") or []
    application = tags[-1] if isinstance(tags, list) and tags else None
    return (repr(sorted((task.metrics[name].signature or {}).items())), config.get("output_type"), config.get("language"), application)


def _describe_split(classes: dict[tuple, list[str]]) -> str:
    parts = []
    for (_, output_type, language, application), names in classes.items():
        parts.append(f"{'+'.join(names)} ({application or output_type}, {language})")
    return "measured differently across " + "; ".join(parts)


def pooled_group_scores(members: Sequence[str], tasks: Mapping[str, TaskResult], scores: Mapping[str, MemberScores], *,
                        n_boot: int, seed: int) -> tuple[dict[str, GroupMetric], dict[str, str]]:
    """The group values of the metrics that two or more alike members share, each computed over
    the pooled documents, and {metric: why it has no group value} for the rest."""
    from harness.metrics.stats import summarize

    values: dict[str, GroupMetric] = {}
    notes: dict[str, str] = {}
    # sorted: a group and a tag with the same members pool (and resample) the same documents alike
    have = sorted(t for t in members if t in tasks and t in scores)
    names = sorted({n for t in have for n in scores[t].metrics})
    for name in names:
        with_metric = [t for t in have if name in scores[t].metrics and scores[t].stats.get(name)
                       and (m := tasks[t].metrics.get(name)) is not None and m.value is not None]
        if len(with_metric) < 2:
            continue
        classes: dict[tuple, list[str]] = {}
        for t in with_metric:
            classes.setdefault(_alike_key(tasks[t], name), []).append(t)
        if len(classes) > 1:
            notes[name] = _describe_split(classes)
            continue
        metric = scores[with_metric[0]].metrics[name]
        pooled = [s for t in with_metric for s in scores[t].stats[name]]
        v = summarize(metric, pooled, n_boot=n_boot, seed=seed)
        first = tasks[with_metric[0]].metrics[name]
        values[name] = GroupMetric(name, v.value, stderr=v.stderr, ci_low=v.ci_low, ci_high=v.ci_high, n=v.n,
                                   higher_is_better=v.higher_is_better, signature=first.signature, filter=first.filter,
                                   other={"aggregation": "pooled documents"}, tasks=with_metric)
    return values, notes
