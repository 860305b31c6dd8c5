"""What the machine allows, measured in the same run as benchmarks/bench_lmeval.py: the compute
roof of rolling perplexity and the memory floor of a float32 model.

Compute roof. Rolling perplexity scores every token of long documents in disjoint windows: no
context repeats, so nothing can be shared, and every position needs the whole forward pass and
the whole vocabulary head. Its model FLOPs (harness.benchmark.flops: 2 x the matrix weights per
position + 4 x n_layers x n_heads x head_dim x the positions attended, counted over the actual
windows of the task's documents under the model's tokenizer) over the fastest float32 matrix
product measured here (harness.benchmark.machine.matmul_peak) is the least time any runner can
take; lm-eval's evaluation time over that is the largest speedup over lm-eval the machine allows.

Memory floor. A process that imports torch, transformers and the harness and loads the scratch
decoder's float32 weights, and evaluates nothing, peaks at what no float32 run of the model in
this runtime can go below; a memory target under it cannot be met by either backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The project's targets that these ceilings bound: scratch: at least 3x faster than lm-eval on
# rolling perplexity, and every backend's peak memory at most a third of lm-eval's.
ROLLING_SPEEDUP_TARGET = 3.0
MEMORY_TARGET_FRACTION = 1 / 3
MIB = 1024 * 1024


def child_ceilings(folder: str, spec: str, batch_size: int) -> dict[str, Any]:
    """In a fresh process: the memory floor (first, so that nothing else raises the peak), then the
    model FLOPs of the rolling task's windows and the machine's matrix-product peak."""
    from harness.benchmark.machine import current_rss_bytes, peak_rss_bytes

    import torch  # noqa: F401 - the runtime every runner imports
    import transformers  # noqa: F401

    import harness
    from harness.benchmark.flops import forward_flops
    from harness.benchmark.machine import attention_rate, matmul_peak
    from harness.models.base import rolling_windows

    imports_peak = peak_rss_bytes()
    lm = harness.load_model(spec, dtype="float32", device="cpu", batch_size=batch_size)
    floor, resident = peak_rss_bytes(), current_rss_bytes()
    weights = {id(t): t.numel() * t.element_size() for t in lm.model.parameters()}

    # the windows the runners score: the task's documents under the model's tokenizer, split as
    # loglikelihood_rolling splits them (disjoint windows of the model's length, a prefix token
    # before the first); a window of (context, targets) runs len(context) + len(targets) - 1
    # positions and scores the last len(targets)
    texts = [json.loads(line)["text"] for line in (Path(folder) / "prose.jsonl").read_text(encoding="utf-8").splitlines()]
    windows = [(len(ctx) + len(targets) - 1, len(targets))
               for text in texts for ctx, targets in rolling_windows(lm.tok_encode(text), lm.prefix_token_id, lm.max_length)]
    flops = forward_flops(lm.config, windows)
    c = lm.config
    config = {"dim": c.dim, "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
              "head_dim": c.head_dim, "ffn_dim": c.ffn_dim, "vocab_size": c.vocab_size, "max_length": lm.max_length}
    del lm
    peak = matmul_peak()
    # attention at the run's longest window (where its rate is highest): the generous reading
    # (capped: the probe holds q, k, v and a length x length score matrix per head)
    attention = attention_rate(min(max((w[0] for w in windows), default=1), 8192), c.n_heads, c.head_dim)
    return {"floor": {"imports_peak_mib": imports_peak / MIB, "loaded_peak_mib": floor / MIB,
                      "loaded_rss_mib": resident / MIB,
                      "weight_bytes": sum(weights.values()), "spec": spec},
            "rolling": {"window_positions": [w[0] for w in windows], "window_scored": [w[1] for w in windows],
                        "flops": flops.as_dict(), "config": config},
            "matmul": peak, "attention": attention}


def ceilings(rows: list[dict], child: dict[str, Any], target: float = ROLLING_SPEEDUP_TARGET,
             memory_fraction: float = MEMORY_TARGET_FRACTION) -> dict[str, Any]:
    """The compute roof of peer_rolling and the memory floor beside every task's peaks, from the
    runners' rows and the ceilings child's report."""
    f = child["rolling"]["flops"]
    flops = f["total"]
    peak = child["matmul"]["peak_gflop_s"]
    roof_s = flops / (peak * 1e9)
    # a tighter roof: the weight products at the peak, attention at what torch's causal attention
    # reaches here (its products are thin: inner dimension head_dim)
    attention = (child.get("attention") or {}).get("gflop_s")
    parts_s = None if not attention else f["matrix_flops"] / (peak * 1e9) + f["attention_flops"] / (attention * 1e9)
    rolling = [r for r in rows if r["task"] == "peer_rolling"]
    ref = next((r for r in rolling if r["runner"] == "lm-eval"), None)
    runners = [{"runner": r["runner"], "eval_s": r["eval_s"], "achieved_gflop_s": flops / r["eval_s"] / 1e9,
                "fraction_of_peak": flops / r["eval_s"] / 1e9 / peak,
                "speedup_eval": None if ref is None else ref["eval_s"] / r["eval_s"],
                "tokens_requested": r.get("tokens_requested")} for r in rolling]
    counted = child["rolling"]["flops"]["positions"]
    mismatched = [r["runner"] for r in runners if r["tokens_requested"] not in (None, counted)]
    # the rate the target needs: the task's FLOPs in lm-eval's eval time over the target
    needed = None if ref is None else flops * target / ref["eval_s"] / 1e9
    roof = {"flops": flops, "peak_gflop_s": peak, "roof_s": roof_s, "runners": runners,
            "max_speedup_over_lmeval": None if ref is None else ref["eval_s"] / roof_s,
            "attention_gflop_s": attention, "roof_attention_s": parts_s,
            "max_speedup_over_lmeval_attention": None if ref is None or parts_s is None else ref["eval_s"] / parts_s,
            "target_speedup": target, "target_gflop_s": needed,
            "target_fraction_of_peak": None if needed is None else needed / peak,
            "positions_counted": counted, "positions_mismatch": mismatched}
    floor_mib = child["floor"]["loaded_peak_mib"]
    tasks = []
    for task in dict.fromkeys(r["task"] for r in rows):
        peaks = {r["runner"]: r["peak_rss_mib"] for r in rows if r["task"] == task}
        lmeval = peaks.get("lm-eval")
        allowed = None if lmeval is None else lmeval * memory_fraction
        tasks.append({"task": task, "peaks_mib": peaks, "lmeval_peak_mib": lmeval, "allowed_mib": allowed,
                      "reachable": None if allowed is None else allowed >= floor_mib})
    floor = {**child["floor"], "floor_mib": floor_mib, "target_fraction": memory_fraction, "tasks": tasks}
    return {"roof": roof, "floor": floor}


def render_ceilings(ceil: dict[str, Any], child: dict[str, Any], model: str) -> list[str]:
    """The two sections of the markdown report: the compute roof, the memory floor."""
    roof, floor, rolling, matmul = ceil["roof"], ceil["floor"], child["rolling"], child["matmul"]
    f, c = rolling["flops"], rolling["config"]
    n, lengths = f["windows"], rolling["window_positions"]
    sizes = (", ".join(str(p) for p in lengths) if n <= 8
             else f"{min(lengths)} to {max(lengths)} (mean {sum(lengths) / n:.0f})")
    shapes = ", ".join(f"{s['shape']} {s['gflop_s']:.0f}" for s in matmul["shapes"])
    lines = ["", "Compute roof of peer_rolling (disjoint windows: no context repeats, every position runs the "
                 "whole pass and the whole head):", "",
             f"{n} window{'s' * (n != 1)} of {sizes} positions, {f['positions']} in all, "
             f"{'every one' if f['scored'] == f['positions'] else f['scored']} scored (a window holds at most "
             f"the model's {c['max_length']}). Model FLOPs per position, from {model}'s config: "
             f"2 x {(f['body_matrix_params'] + f['head_matrix_params']) / 1e6:.1f} M matrix weights "
             f"(body {f['body_matrix_params'] / 1e6:.1f} M + head {f['head_matrix_params'] / 1e6:.1f} M) "
             f"+ 4 x {c['n_layers']} layers x {c['n_heads']} heads x {c['head_dim']} x {f['mean_attended']:.0f} positions attended "
             f"on average = {f['per_position'] / 1e6:.0f} MFLOP ({f['matrix_flops'] / f['total']:.0%} in the "
             f"weight products); {f['total'] / 1e12:.2f} TFLOP for the task.",
             f"Float32 matrix-product peak measured here: {matmul['peak_gflop_s']:.1f} GFLOP/s "
             f"({matmul['threads']} threads, best of {matmul['repetitions']} after a warm-up, fastest of "
             f"torch.mm, F.linear and oneDNN per shape; GFLOP/s per shape: {shapes}). At that rate the task "
             f"takes at least {roof['roof_s']:.1f} s.", "",
             "| runner | eval s | achieved GFLOP/s | fraction of the peak | speedup over lm-eval, eval |",
             "|---|---:|---:|---:|---:|"]
    for r in roof["runners"]:
        speed = "" if r["speedup_eval"] is None or r["runner"] == "lm-eval" else f"{r['speedup_eval']:.2f}x"
        lines.append(f"| {r['runner']} | {r['eval_s']:.1f} | {r['achieved_gflop_s']:.1f} | {r['fraction_of_peak']:.2f} | {speed} |")
    best = roof["max_speedup_over_lmeval"]
    lines.append(f"| the roof (every product at the peak, nothing else) | {roof['roof_s']:.1f} | {roof['peak_gflop_s']:.1f} "
                 f"| 1.00 | {'' if best is None else f'{best:.2f}x'} |")
    parts, best_parts = roof["roof_attention_s"], roof["max_speedup_over_lmeval_attention"]
    if parts is not None:
        a = child["attention"]
        lines.append(f"| the roof with attention at torch's causal-attention rate ({roof['attention_gflop_s']:.1f} "
                     f"GFLOP/s at {a['length']} positions) | {parts:.1f} | {roof['flops'] / parts / 1e9:.1f} "
                     f"| {roof['flops'] / parts / 1e9 / roof['peak_gflop_s']:.2f} "
                     f"| {'' if best_parts is None else f'{best_parts:.2f}x'} |")
    if best is not None:
        verdict = "within" if best >= roof["target_speedup"] else "beyond"
        lines += ["", f"The largest speedup over lm-eval that this machine's matrix-product peak allows on "
                      f"peer_rolling is {best:.2f}x; the target of {roof['target_speedup']:g}x is {verdict} it: it "
                      f"needs {roof['target_gflop_s']:.1f} GFLOP/s of model FLOPs over the whole evaluation, "
                      f"{roof['target_fraction_of_peak']:.2f} of the peak."
                      + ("" if best_parts is None else
                         f" With attention at the rate torch's causal attention reaches here, the largest "
                         f"speedup is {best_parts:.2f}x.")]
    if roof["positions_mismatch"]:
        lines.append(f"WARNING: the counted windows ({roof['positions_counted']} positions) differ from what "
                     f"{', '.join(roof['positions_mismatch'])} reported as requested.")
    lines += ["", f"Memory floor: a process that imports torch, transformers and the harness peaks at {floor['imports_peak_mib']:.0f} MiB; "
              f"loading {floor['spec']}'s float32 weights ({floor['weight_bytes'] / 1e6:.0f} MB) takes it to "
              f"a peak of {floor['floor_mib']:.0f} MiB ({floor['loaded_rss_mib']:.0f} MiB resident once loaded) before "
              f"anything is evaluated; {floor['imports_peak_mib'] + floor['weight_bytes'] / MIB:.0f} MiB of it are the imports "
              f"and the weights alone. No float32 run of the model in this runtime peaks lower.", ""]
    runners = list(dict.fromkeys(k for t in floor["tasks"] for k in t["peaks_mib"] if k != "lm-eval"))
    lines += ["| task | lm-eval peak MiB | a third of it | floor MiB | " + " | ".join(f"{r} peak" for r in runners)
              + " | a third of lm-eval's at or above the floor |",
              "|---|---:|---:|---:|" + "---:|" * len(runners) + "---|"]
    for t in floor["tasks"]:
        ref = "" if t["lmeval_peak_mib"] is None else f"{t['lmeval_peak_mib']:.0f}"
        allowed = "" if t["allowed_mib"] is None else f"{t['allowed_mib']:.0f}"
        ours = " | ".join(f"{t['peaks_mib'][r]:.0f}" if r in t["peaks_mib"] else "" for r in runners)
        reach = "" if t["reachable"] is None else ("yes" if t["reachable"] else "no: below the floor")
        lines.append(f"| {t['task']} | {ref} | {allowed} | {floor['floor_mib']:.0f} | {ours} | {reach} |")
    return lines


if __name__ == "__main__":
    sys.exit("bench_lmeval_ceilings: run benchmarks/bench_lmeval.py")
