"""The leaderboard's method: which columns are ranked, what counts as a win, one row per weights.

- Primary metric: each task's own (`primary_metric` in the task file, recorded in the results'
  task config), else a default by output type (`default_primary_metric`). The default view ranks
  on the primary metrics only.
- Not comparable: metrics that depend on the tokenizer (`token_perplexity`; `perplexity` of a
  `loglikelihood` task, per token of the continuation) are shown but never ranked when the models
  that have them use different tokenizers.
- Exact transforms count once: on one task, `bits_per_byte` is log2 of `byte_perplexity`, and on
  a `loglikelihood_rolling` task word perplexity, byte perplexity and bits per byte are all
  monotone functions of one total log-likelihood over the same text; `rougeLsum` equals `rougeL`
  on one-line outputs. Of each such set, only one column is ranked.
- A win needs a real difference: values within relative `NOISE` (1e-6) are a tie, and so is a
  difference inside the CIs (either value inside the other's 95% CI). Ties count half, as in
  HELM's win rate.
- One row per model weights: entries whose weights are the same (the `weights` identity the model
  record gives, else its weights file and dtype) and whose numbers agree within `NOISE` on every
  shared (task, metric) become one row; the backends are shown as its variants. Entries whose
  numbers disagree stay separate rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.report.collect import Cell, Column, ModelEntry

NOISE = 1e-6  # relative: hf and scratch on the same weights agree to ~1e-8
TOKENIZER_DEPENDENT = ("token_perplexity",)
ROLLING_TRANSFORMS = ("bits_per_byte", "byte_perplexity", "word_perplexity")  # the preferred one first


def output_adapter(output_type: str | None):  # noqa: ANN201 - an OutputAdapter, or None
    """The adapter of a results file's output type (None for one this harness does not know)."""
    from harness.adapters import get_adapter
    from harness.errors import HarnessError

    try:
        return get_adapter(output_type) if output_type else None
    except HarnessError:
        return None


def default_primary_metric(output_type: str | None, metrics: Sequence[str]) -> str | None:
    """The primary metric of a task that names none: its output type's preference among the
    metrics it reports (rolling: bits_per_byte, else word_perplexity; multiple choice: acc), else
    the first metric that is comparable across tokenizers."""
    names = list(metrics)
    if not names:
        return None
    adapter = output_adapter(output_type)
    if adapter is not None:
        return adapter.primary_metric(names)
    comparable = [m for m in names if m not in TOKENIZER_DEPENDENT]
    return (comparable or names)[0]


def task_config(entries: Sequence[ModelEntry], task: str) -> dict[str, Any]:
    for e in entries:
        if task in e.tasks:
            return e.tasks[task].config or {}
    return {}


def primary_metric(entries: Sequence[ModelEntry], task: str) -> str | None:
    """The task's primary metric, the first of these that the results report: the task file's
    `primary_metric` (recorded in the task config), the one the runner recorded beside the task's
    metrics (its output type's default), else `default_primary_metric`."""
    config = task_config(entries, task)
    reported = list(dict.fromkeys(m for e in entries if task in e.tasks for m in e.tasks[task].metrics))
    recorded = next((e.tasks[task].primary_metric for e in entries if task in e.tasks), None)
    for declared in (config.get("primary_metric"), recorded):
        if isinstance(declared, str) and declared in reported:
            return declared
    listed = [m.get("metric") for m in config.get("metric_list") or [] if isinstance(m, dict)]
    ordered = [m for m in listed if m in reported] + [m for m in reported if m not in listed]
    return default_primary_metric(config.get("output_type"), ordered)


def primary_columns(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> list[Column]:
    """Of the given columns, each task's primary one (tasks whose primary metric was filtered out
    are left out)."""
    tasks = list(dict.fromkeys(c.task for c in cols))
    chosen = {t: primary_metric(entries, t) for t in tasks}
    return [c for c in cols if chosen[c.task] == c.metric]


# -- identity of weights and tokenizers ---------------------------------------------------------

def weights_key(model: dict[str, Any]) -> str:
    """What identifies a model's weights across backends: a recorded weights identity when the
    results have one, else the weights file's name (not its folder: results from two machines
    merge too) and dtype. Entries merge only when their numbers agree as well (`agree`), so two
    different models that happen to share a file name never do."""
    for key in ("weights", "weights_fingerprint", "weights_sha256"):
        if model.get(key):
            return f"{key}:{model[key]}"
    source = str(model.get("source") or model.get("name") or model.get("spec") or "?")
    return f"{source.replace(chr(92), '/').rstrip('/').rsplit('/', 1)[-1]}|{model.get('dtype') or '?'}"


def tokenizer_key(model: dict[str, Any]) -> str:
    """What identifies a tokenizer: a recorded tokenizer identity, else the weights file (the GGUF
    files and model folders carry their own tokenizer)."""
    for key in ("tokenizer", "tokenizer_fingerprint"):
        if model.get(key):
            return f"{key}:{model[key]}"
    return str(model.get("source") or model.get("name") or model.get("spec") or "?")


# -- which columns may be ranked ---------------------------------------------------------------

@dataclass(frozen=True)
class ColumnStatus:
    column: Column
    ranked: bool
    reason: str = ""  # why a shown column is not ranked


def column_statuses(entries: Sequence[ModelEntry], cols: Sequence[Column]) -> list[ColumnStatus]:
    """Each column, ranked or not and why: tokenizer-dependent across tokenizers, or an exact
    transform of another ranked column of the same task."""
    out: list[ColumnStatus] = []
    ranked: list[Column] = []
    for col in _transform_order(cols):
        reason = _not_comparable(entries, col)
        if not reason:
            twin = next((r for r in ranked if r.task == col.task and _transforms(entries, r, col)), None)
            if twin is not None:
                reason = f"an exact transform of {twin.metric}: counted once"
        if not reason:
            ranked.append(col)
        out.append(ColumnStatus(col, not reason, reason))
    order = {c: i for i, c in enumerate(cols)}
    return sorted(out, key=lambda s: order[s.column])


def _transform_order(cols: Sequence[Column]) -> list[Column]:
    """Columns with the preferred member of each transform family first, so it is the one ranked."""
    def rank(c: Column) -> int:
        if c.metric in ROLLING_TRANSFORMS:
            return ROLLING_TRANSFORMS.index(c.metric)
        return 1 if c.metric == "rougeLsum" else 0
    return sorted(cols, key=rank)


def _not_comparable(entries: Sequence[ModelEntry], col: Column) -> str:
    adapter = output_adapter(task_config(entries, col.task).get("output_type"))
    dependent = adapter.tokenizer_dependent if adapter is not None else frozenset(TOKENIZER_DEPENDENT)
    if col.metric not in dependent:
        return ""
    tokenizers = {tokenizer_key(e.model) for e in entries if _value(e, col) is not None}
    return "depends on the tokenizer, and the models' tokenizers differ" if len(tokenizers) > 1 else ""


def _transforms(entries: Sequence[ModelEntry], a: Column, b: Column) -> bool:
    """Whether b is an exact (monotone) transform of a on this task, for every model."""
    adapter = output_adapter(task_config(entries, a.task).get("output_type"))
    families = adapter.exact_transforms if adapter is not None else (frozenset({"bits_per_byte", "byte_perplexity"}),)
    if any({a.metric, b.metric} <= family for family in families):
        return True
    if {a.metric, b.metric} == {"rougeL", "rougeLsum"}:
        pairs = [(_value(e, a), _value(e, b)) for e in entries]
        pairs = [(x, y) for x, y in pairs if x is not None or y is not None]
        return bool(pairs) and all(x is not None and y is not None and tie(x, y) for x, y in pairs)
    return False


# -- wins, ties and the ranking -----------------------------------------------------------------

def tie(a: float, b: float) -> bool:
    """Equal within numerical noise (relative NOISE)."""
    return math.isclose(a, b, rel_tol=NOISE, abs_tol=1e-12)


def indistinguishable(a: Cell, b: Cell) -> bool:
    """A tie: equal within noise, or either value inside the other's 95% CI."""
    assert a.value is not None and b.value is not None
    if tie(a.value, b.value):
        return True
    return _inside(a.value, b) or _inside(b.value, a)


def _inside(x: float, cell: Cell) -> bool:
    return cell.ci_low is not None and cell.ci_high is not None and cell.ci_low <= x <= cell.ci_high


def _value(e: ModelEntry, col: Column) -> float | None:
    cell = e.cell(col.task, col.metric)
    return cell.value if cell else None


def win_rates(entries: Sequence[ModelEntry], col: Column) -> dict[str, float]:
    """Per model label, its win rate in this column (HELM: beats + ties/2 over the others);
    {} with fewer than 2 values. A difference inside the CIs or within noise is a tie."""
    cells = {e.label: c for e in entries if (c := e.cell(col.task, col.metric)) and c.value is not None}
    if len(cells) < 2:
        return {}
    sign = 1 if col.higher_is_better else -1
    out = {}
    for label, c in cells.items():
        beats = ties = 0
        for other, o in cells.items():
            if other == label:
                continue
            if indistinguishable(c, o):
                ties += 1
            elif sign * (c.value - o.value) > 0:
                beats += 1
        out[label] = (beats + ties / 2) / (len(cells) - 1)
    return out


def normalized_scores(entries: Sequence[ModelEntry], col: Column) -> dict[str, float]:
    """Per model label, the value min-max scaled to [0, 1], best 1; {} when all are equal within noise."""
    values = {e.label: v for e in entries if (v := _value(e, col)) is not None}
    if len(values) < 2:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if tie(lo, hi):
        return {}
    return {k: ((v - lo) if col.higher_is_better else (hi - v)) / (hi - lo) for k, v in values.items()}


def best_labels(entries: Sequence[ModelEntry], col: Column) -> set[str]:
    """The best value's models, and every model indistinguishable from it (within noise or CI)."""
    cells = {e.label: c for e in entries if (c := e.cell(col.task, col.metric)) and c.value is not None}
    if len(cells) < 2:
        return set()
    pick = max if col.higher_is_better else min
    top = pick(cells.values(), key=lambda c: c.value)
    best = {label for label, c in cells.items() if indistinguishable(c, top)}
    return set() if len(best) == len(cells) else best  # all tied: nobody is best


# -- one row per weights ------------------------------------------------------------------------

@dataclass
class ModelGroup:
    """One leaderboard row: an entry standing for the same weights on several backends."""

    entry: ModelEntry  # the representative whose numbers are shown
    variants: list[ModelEntry] = field(default_factory=list)  # every entry of the row, representative first

    @property
    def backends(self) -> list[str]:
        return [str(v.model.get("backend") or "?") for v in self.variants]


def agree(a: ModelEntry, b: ModelEntry) -> bool:
    """Whether two entries report the same numbers within noise on every shared (task, metric)."""
    shared = 0
    for task, record in a.tasks.items():
        for metric in record.metrics:
            x, y = a.cell(task, metric), b.cell(task, metric)
            if x is None or y is None or x.value is None or y.value is None:
                continue
            shared += 1
            if not tie(x.value, y.value):
                return False
    return shared > 0


def group_by_weights(entries: Sequence[ModelEntry]) -> list[ModelGroup]:
    """Entries of the same weights whose numbers agree within noise, as one group each. An entry
    without quality results (benchmark only) joins the group of the same weights file, whatever
    its dtype (llama.cpp runs the quantized file as it is), so its speed shows beside that row."""
    groups: list[ModelGroup] = []
    for e in entries:
        if e.tasks:
            home = next((g for g in groups if weights_key(g.entry.model) == weights_key(e.model)
                         and all(agree(v, e) for v in g.variants if v.tasks)), None)
        else:
            home = next((g for g in groups if _file(g.entry.model) == _file(e.model)), None)
        if home is None:
            groups.append(ModelGroup(e, [e]))
        else:
            home.variants.append(e)
    return groups


def _file(model: dict[str, Any]) -> str:
    return str(model.get("source") or model.get("name") or model.get("spec") or "?")
