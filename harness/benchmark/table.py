"""The table `harness bench` prints: speed and memory of models and backends.

The median over the timed repetitions with half their range, per (model, shape); then the machine
and what the numbers are. The command is harness/cli/bench.py, the measurement the rest of
harness/benchmark/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.benchmark.machine import describe
from harness.report.text_tables import text_table

if TYPE_CHECKING:
    from harness.results import RunResults

BUSY_PERCENT = 25  # CPU use by others, sampled just before and after the run, above which the table warns


def _pm(stats: dict[str, Any] | None, digits: int = 3) -> str:
    """'25.3 ±0.4': the median and half the range of the repetitions."""
    if not stats:
        return "—"
    med, half = stats["median"], stats.get("half_range") or 0.0

    def fmt(x: float) -> str:
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"

    return fmt(med) if stats.get("n", 1) < 2 else f"{fmt(med)} ±{half:.2g}"


def _loads(options: dict[str, Any]) -> str:
    n = options.get("load_repetitions") or 1
    where = "in this process" if options.get("in_process") else "in a fresh process"
    return f"one load {where}" if n == 1 else f"median of {n} loads, each {where}"


def bench_table(results: RunResults) -> str:
    """One row per (model, shape), then the machine and what the numbers are."""
    header = ["model", "load s", "shape", "TTFT s", "prefill tok/s", "decode tok/s", "requests/s", "peak RSS MiB"]
    benched = [e for e in results.evaluations if e.bench]
    cuda = any(s.get("peak_gpu_allocated_mib") is not None for e in benched for s in e.bench["shapes"])
    if cuda:
        header.append("peak GPU MiB")
    rows = []
    for evaluation in benched:
        bench = evaluation.bench
        for i, shape in enumerate(bench["shapes"]):
            row = [evaluation.model.spec if i == 0 else "", _pm(bench["load_s"]) if i == 0 else "",
                   shape["label"], _pm(shape["ttft_s"]), _pm(shape["prefill_tokens_per_s"]),
                   _pm(shape["decode_tokens_per_s"]), _pm(shape["requests_per_s"]), f"{shape['peak_rss_mib']:.0f}"]
            if cuda:
                gpu = shape.get("peak_gpu_allocated_mib")
                row.append("—" if gpu is None else f"{gpu:.0f}")
            rows.append(row)
    lines = [text_table(header, rows, "llllrrrr" + ("r" if cuda else ""))]
    options = results.options
    env = results.environment or {}
    m = env.get("machine", {})
    lines.append("")
    lines.append(f"shape pP bB nN: P-token prompts, batch of B, N new tokens (greedy, EOS ignored); "
                 f"median of {options.get('repetitions')} timed runs ±half their range, after "
                 f"{options.get('warmup')} warm-up run(s); load: {_loads(options)}.")
    lines.append("decode tok/s counts every new token after each row's first, over the whole batch; "
                 "rows of llamacpp run one after another.")
    kernels = [f"{e.model.label} {e.model.extra['kernels']}" for e in benched if e.model.extra.get("kernels")]
    if kernels:  # the per-CPU matrix-product path each backend chose (scratch: packing.py)
        lines.append(f"kernels: {'; '.join(kernels)}")
    if m:
        before, after = m.get("load_average"), m.get("load_average_after")
        load = f"; load average {before[0]:.2f} before, {after[0]:.2f} after" if before and after else ""
        lines.append(f"machine: {describe(m)}{load}")
        busy = [x for x in (m.get("cpu_busy_percent"), m.get("cpu_busy_percent_after")) if x is not None]
        if busy and max(busy) > BUSY_PERCENT:
            lines.append(f"warning: other work kept the CPUs {max(busy):.0f}% busy around the run: "
                         "timings are noisy; rerun when the machine is idle")
    for error in results.errors:
        lines.append(f"FAILED {error['spec']}: {error['error']}")
    note = results.status_note()
    if note:
        lines.append(note)
    return "\n".join(lines)
