"""`harness compare`: a candidate results file against a baseline, per (model, task, metric).

Each row has the delta (candidate - baseline), its 95% CI and a paired significance test on the
per-sample records (significance.py), and a verdict: improved, regressed or unchanged (or missing
when the candidate lacks a baseline metric, new when the baseline lacks it). A change counts only
when it is significant at `alpha` and at least as large as the thresholds. Results whose data or
prompt hashes differ are refused unless forced, with the reason (compat.py).

Benchmark results (`harness bench`) are compared too, figure by figure (load time, TTFT, tokens/s,
requests/s, peak memory): timings are noisy, so the comparison is between medians over the
repetitions each file recorded, and a change counts only when it is at least `speed` (timings)
or `memory` (peak memory) times the baseline median; the spread of both is in the note. Results
measured on different shapes or devices are refused unless forced; different machines give a
warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.metrics.base import Metric, get_metric
from harness.report.collect import ModelEntry, load_entries
from harness.report.compat import incompatibilities
from harness.report.html import read_samples
from harness.report.significance import SMALL_N, PairedTest, approximate_randomization, paired_bootstrap
from harness.report.report_tables import EFFICIENCY_TASK, efficiency_columns
from harness.results import MetricResult, load_results

VERDICTS = ("regressed", "improved", "unchanged", "missing", "new")


@dataclass
class Thresholds:
    """Minimum size of a change that counts. Keys: "" (every metric), "metric" or "task/metric"."""

    alpha: float = 0.05
    absolute: dict[str, float] = field(default_factory=dict)
    relative: dict[str, float] = field(default_factory=dict)
    speed: float = 0.15  # efficiency: a timing must change by 15% of the baseline median to count
    memory: float = 0.10  # efficiency: peak memory by 10%

    def efficiency_threshold(self, figure: str) -> float:
        """Relative threshold of an efficiency figure: --threshold-rel FIGURE=X (or efficiency/FIGURE=X)
        when given, else `memory` for memory figures and `speed` for the rest."""
        for key in (f"{EFFICIENCY_TASK}/{figure}", figure):
            if key in self.relative:
                return self.relative[key]
        return self.memory if "memory" in figure else self.speed

    def lookup(self, table: dict[str, float], task: str, metric: str) -> float:
        for key in (f"{task}/{metric}", metric, ""):
            if key in table:
                return table[key]
        return 0.0

    def large_enough(self, task: str, metric: str, delta: float, baseline: float | None) -> bool:
        if abs(delta) < self.lookup(self.absolute, task, metric):
            return False
        rel = self.lookup(self.relative, task, metric)
        if rel > 0 and baseline not in (None, 0):
            return abs(delta) / abs(baseline) >= rel
        return True


@dataclass
class MetricComparison:
    model: str
    task: str
    metric: str
    higher_is_better: bool
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    n: int
    verdict: str
    note: str = ""


@dataclass
class Comparison:
    baseline: str
    candidate: str
    pairs: list[tuple[str, str]]
    rows: list[MetricComparison]
    thresholds: Thresholds
    warnings: list[str] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.rows if r.verdict == verdict)

    @property
    def failed(self) -> bool:
        """What --fail-on-regression fails on: a regression, or a baseline metric the candidate lacks."""
        return self.count("regressed") > 0 or self.count("missing") > 0

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "candidate": self.candidate, "pairs": self.pairs,
                "alpha": self.thresholds.alpha, "absolute": self.thresholds.absolute,
                "relative": self.thresholds.relative, "speed_threshold": self.thresholds.speed,
                "memory_threshold": self.thresholds.memory, "warnings": self.warnings,
                "counts": {v: self.count(v) for v in VERDICTS}, "rows": [asdict(r) for r in self.rows]}


def pair_models(base: list[ModelEntry], cand: list[ModelEntry], baseline_model: str | None = None,
                candidate_model: str | None = None) -> list[tuple[ModelEntry, ModelEntry]]:
    """Which baseline model is compared with which candidate model."""
    def pick(entries: list[ModelEntry], spec: str | None, side: str) -> list[ModelEntry]:
        if spec is None:
            return entries
        found = [e for e in entries if spec in (e.label, e.model.spec, e.model.name)]
        if not found:
            raise HarnessError(f"--{side}-model {spec!r} is not in the {side} file; it has: "
                               f"{', '.join(e.label for e in entries)}")
        return found[:1]

    base, cand = pick(base, baseline_model, "baseline"), pick(cand, candidate_model, "candidate")
    if len(base) == 1 and len(cand) == 1:
        return [(base[0], cand[0])]
    by_spec = {e.model.spec: e for e in cand}
    pairs = [(b, by_spec[b.model.spec]) for b in base if b.model.spec in by_spec]
    if not pairs:
        raise HarnessError("the two files share no model spec; choose with --baseline-model and --candidate-model "
                           f"(baseline: {', '.join(e.label for e in base)}; candidate: {', '.join(e.label for e in cand)})")
    return pairs


def compare_files(baseline: str | Path, candidate: str | Path, *, thresholds: Thresholds | None = None,
                  force: bool = False, tasks: Sequence[str] | None = None, baseline_model: str | None = None,
                  candidate_model: str | None = None, n_resamples: int = 1000, seed: int = 1234) -> Comparison:
    """Compare every (task, metric) the paired models share; raise on incompatible results unless forced."""
    thresholds = thresholds or Thresholds()
    if not 0 < thresholds.alpha < 1:
        raise HarnessError(f"--alpha must be between 0 and 1, not {thresholds.alpha}")
    pairs = pair_models(load_entries([baseline]), load_entries([candidate]), baseline_model, candidate_model)
    comparison = Comparison(str(baseline), str(candidate), [(b.label, c.label) for b, c in pairs], [], thresholds)
    problems, notices = [], []
    bench_b, bench_c = bench_records(baseline), bench_records(candidate)
    for b, c in pairs:
        for task in _tasks(b, c, tasks):
            if task in b.tasks and task in c.tasks:
                reasons = incompatibilities(b, c, task)
                if reasons:
                    problems.append(f"{task}: {'; '.join(reasons)}")
            comparison.rows += compare_task(b, c, task, thresholds, n_resamples=n_resamples, seed=seed)
        if b.efficiency and c.efficiency:
            db, dc = bench_b.get(b.model.spec), bench_c.get(c.model.spec)
            reasons, warnings = bench_incompatibilities(db, dc)
            problems += [f"{EFFICIENCY_TASK}: {r}" for r in reasons]
            notices += [f"{EFFICIENCY_TASK}: {w}" for w in warnings]
            comparison.rows += compare_efficiency(b, c, thresholds, db, dc)
    problems, notices = list(dict.fromkeys(problems)), list(dict.fromkeys(notices))  # once, not per model
    if problems and not force:
        raise HarnessError("refusing to compare: " + " | ".join(problems) + "; pass --force to compare anyway")
    comparison.warnings = [f"forced: {p}" for p in problems] + notices
    return comparison


def bench_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """model spec -> its `bench` record, for a results file of `harness bench` (else {})."""
    data = load_results(path)
    if data.kind != "benchmark":
        return {}
    return {e.model.spec: {**(e.bench or {}), "options": data.options} for e in data.evaluations}


def bench_incompatibilities(b: dict[str, Any] | None, c: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(reasons to refuse, warnings) for comparing two benchmark records."""
    if not b or not c:
        return [], []
    reasons, warnings = [], []
    fb, fc = b.get("figures") or {}, c.get("figures") or {}
    shapes = dict.fromkeys(f"{fb[k].get('shape')} vs {fc[k].get('shape')}" for k in fb
                           if k in fc and fb[k].get("shape") != fc[k].get("shape"))
    if shapes:
        reasons.append("the benchmark shapes differ (" + ", ".join(shapes) + ")")
    ob, oc = b.get("options", {}), c.get("options", {})
    if ob.get("device") != oc.get("device"):
        reasons.append(f"measured on different devices ({ob.get('device')} vs {oc.get('device')})")
    if ob.get("in_process") != oc.get("in_process"):
        warnings.append("one file was measured in process (--in-process), the other in fresh processes: "
                        "load time and memory are not comparable")
    mb, mc = b.get("machine") or {}, c.get("machine") or {}
    keys = ("cpu", "cpu_cores_usable", "gpu", "torch_threads")
    if any(mb.get(k) != mc.get(k) for k in keys):
        def text(m: dict[str, Any]) -> str:
            gpu = ", ".join(g.get("name", "?") for g in m.get("gpu") or []) or "no GPU"
            return f"{m.get('cpu')} x{m.get('cpu_cores_usable')}, {gpu}, torch threads {m.get('torch_threads')}"
        warnings.append(f"measured on different machines ({text(mb)} vs {text(mc)})")
    return reasons, warnings


def compare_efficiency(b: ModelEntry, c: ModelEntry, thresholds: Thresholds, bench_b: dict[str, Any] | None = None,
                       bench_c: dict[str, Any] | None = None) -> list[MetricComparison]:
    """One row per efficiency figure: medians, relative change, verdict by threshold; the spread
    of the repetitions (from the `bench` records, when given) in the note."""
    model = b.label if b.label == c.label else f"{b.label} → {c.label}"
    fb = (bench_b or {}).get("figures") or {}
    fc = (bench_c or {}).get("figures") or {}
    rows = []
    for col in efficiency_columns([b, c]):
        vb, vc = _num(b.efficiency.get(col.key)), _num(c.efficiency.get(col.key))
        sb, sc = fb.get(col.key) or {}, fc.get(col.key) or {}
        nb, nc = sb.get("n"), sc.get("n")
        test = "peak of each process" if "memory" in col.key else f"median of {nb or '?'} vs {nc or '?'} runs"
        if vb is None or vc is None:
            verdict = "missing" if vc is None else "new"
            rows.append(MetricComparison(model, EFFICIENCY_TASK, col.key, col.higher_is_better, vb, vc, None, None,
                                         None, None, test, 0, verdict,
                                         "not in the candidate" if vc is None else "not in the baseline"))
            continue
        delta = vc - vb
        limit = thresholds.efficiency_threshold(col.key)
        change = delta / abs(vb) if vb else math.inf if delta else 0.0
        verdict = "unchanged"
        if delta != 0 and abs(change) >= limit:
            verdict = "improved" if (delta > 0) == col.higher_is_better else "regressed"
        note = f"{change:+.1%} of the baseline median (counts from {limit:.0%})"
        if sb and sc:
            note += f"; runs {_range(sb)} vs {_range(sc)}"
        rows.append(MetricComparison(model, EFFICIENCY_TASK, col.key, col.higher_is_better, vb, vc, delta, None,
                                     None, None, test, min(nb or 0, nc or 0), verdict, note))
    return rows


def _range(stats: dict[str, Any]) -> str:
    lo, hi = stats.get("min"), stats.get("max")
    if lo is None or hi is None:
        return "?"
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}–{hi:.4g}"


def _tasks(b: ModelEntry, c: ModelEntry, patterns: Sequence[str] | None) -> list[str]:
    import fnmatch

    names = list(dict.fromkeys([*b.tasks, *c.tasks]))
    return [t for t in names if not patterns or any(fnmatch.fnmatchcase(t, p) for p in patterns)]


def compare_task(b: ModelEntry, c: ModelEntry, task: str, thresholds: Thresholds, *, n_resamples: int = 1000,
                 seed: int = 1234) -> list[MetricComparison]:
    bm = b.tasks[task].metrics if task in b.tasks else {}
    cm = c.tasks[task].metrics if task in c.tasks else {}
    model = b.label if b.label == c.label else f"{b.label} → {c.label}"
    base_samples = _stats_by_doc(b, task)
    cand_samples = _stats_by_doc(c, task)
    rows = []
    for metric in dict.fromkeys([*bm, *cm]):
        rb, rc = bm.get(metric), cm.get(metric)
        hib = (rb or rc).higher_is_better
        vb = _num(rb.value) if rb else None
        vc = _num(rc.value) if rc else None
        if rb is None or rc is None:
            verdict = "missing" if rc is None else "new"
            rows.append(MetricComparison(model, task, metric, hib, vb, vc, None, None, None, None, "none", 0, verdict,
                                         "not in the candidate" if rc is None else "not in the baseline"))
            continue
        test, note = _test(metric, rb, rc, base_samples, cand_samples, n_resamples, seed)
        note = "; ".join(x for x in (note, test.warning) if x)
        delta = vc - vb if vb is not None and vc is not None else test.delta
        verdict = "unchanged"
        if delta is not None and delta != 0 and test.p_value is not None and test.p_value < thresholds.alpha \
                and thresholds.large_enough(task, metric, delta, vb):
            verdict = "improved" if (delta > 0) == hib else "regressed"
        rows.append(MetricComparison(model, task, metric, hib, vb, vc, delta, test.ci_low, test.ci_high,
                                     test.p_value, test.method, test.n, verdict, note))
    return rows


def _test(metric: str, rb: MetricResult, rc: MetricResult, base: dict | None, cand: dict | None, n_resamples: int,
          seed: int) -> tuple[PairedTest, str]:
    """The paired test for one metric, or an unpaired z-test from the stderrs without per-sample records."""
    if base is None or cand is None:
        return _unpaired(rb, rc), "no per-sample records: unpaired z-test on the bootstrap standard errors"
    docs = [d for d in base if d in cand and metric in base[d] and metric in cand[d]]
    if not docs:
        return _unpaired(rb, rc), "no shared documents with this metric: unpaired z-test"
    note = "" if len(docs) == len(base) == len(cand) else f"{len(docs)} shared documents of {len(base)}/{len(cand)}"
    scorer = _metric(rb.name, rb)
    bs = [base[d][metric] for d in docs]
    cs = [cand[d][metric] for d in docs]
    if scorer is not None and scorer.corpus_level:
        return approximate_randomization(scorer, bs, cs, n_resamples=n_resamples, seed=seed), note
    to_score = scorer.sample_score if scorer is not None else _num
    return paired_bootstrap([_nan(to_score(s)) for s in bs], [_nan(to_score(s)) for s in cs],
                            n_resamples=n_resamples, seed=seed), note


def _metric(name: str, record: MetricResult) -> Metric | None:
    """The metric as the results file configured it, to recompute corpus aggregates from statistics."""
    signature = record.signature or {}
    try:
        metric = get_metric(name, **(signature.get("options") or {}))
    except (HarnessError, TypeError):
        return None
    if hasattr(metric, "language") and signature.get("language") is not None:
        metric.language = signature["language"]
    return metric


def _unpaired(rb: MetricResult, rc: MetricResult) -> PairedTest:
    vb, vc, sb, sc = (_num(x) for x in (rb.value, rc.value, rb.stderr, rc.stderr))
    if None in (vb, vc):
        return PairedTest(None, None, None, None, "none", 0)
    delta = vc - vb
    if sb is None or sc is None or (sb == 0 and sc == 0):
        return PairedTest(delta, None, None, None, "none", 0)
    se = math.hypot(sb, sc)
    p = math.erfc(abs(delta) / se / math.sqrt(2))
    n = min(rb.n or 0, rc.n or 0)
    warning = "" if n >= SMALL_N else (f"only {n} documents: a small sample (under {SMALL_N}); a z-test on bootstrap "
                                       "standard errors is unreliable there, keep the per-sample files for an exact test")
    return PairedTest(delta, delta - 1.96 * se, delta + 1.96 * se, p, "unpaired z-test", n, warning)


def _stats_by_doc(entry: ModelEntry, task: str) -> dict[str, dict[str, Any]] | None:
    """doc id -> {metric: per-sample statistic}, from the task's per-sample JSONL file."""
    path = entry.samples_path(task)
    if path is None or not path.exists():
        return None
    out: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for i, record in enumerate(read_samples(path, strict=True)):
        if not isinstance(record.get("stats"), dict):
            return None
        key = str(record.get("doc_id", i))
        seen[key] = seen.get(key, 0) + 1
        out[key if seen[key] == 1 else f"{key}#{seen[key]}"] = record["stats"]  # repeated ids pair by occurrence
    return out


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, (list, dict, str)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)
