"""Batch-1 decode speed and quality of the scratch decoder's quantized weights, beside llama.cpp
and transformers on the same GGUF (SmolLM2-135M, CPU), in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quant.py [--new-tokens 64] [--repeats 3]
    .venv/bin/python benchmarks/bench_quant.py --gemv [--rows 1]

`--gemv` times one matrix product per SmolLM2-135M layer shape instead (the layers' weights as
random numbers, `--rows` activation rows): float32 oneDNN beside each quantized kernel that runs
here, best of many calls, in microseconds and the weight bytes read per second.

Each configuration loads in its own process. Decode tokens/s: greedy, batch 1, a 13-token
prompt, `--new-tokens` new tokens (EOS ignored) through each backend's `stream_token_ids`,
counted from the first new token to the last (so prefill is left out), best of `--repeats`
after a warm-up. Quality: token perplexity of the same text (the first documents of
tasks/language_modelling/lm_en.jsonl, one window, BOS first) from each backend's full logits.
Ratios are taken within the run: on a shared machine only they are comparable, and the
load average before and after is printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
PROMPT = "The history of the printing press begins in the fifteenth century, when"
CONFIGS = {  # label -> (spec, backend options); the references first, so a cut-short run has them
    "scratch float32": (f"scratch:{MODEL}", {}),
    "llama.cpp (GGUF Q4_1)": (f"llamacpp:{MODEL}", {}),
    "transformers float32": (f"hf:{MODEL}", {}),
    "scratch int8-dynamic": (f"scratch:{MODEL}", {"quant": "int8-dynamic"}),
    "scratch int8": (f"scratch:{MODEL}", {"quant": "int8"}),
    "scratch int4 (group 32)": (f"scratch:{MODEL}", {"quant": "int4"}),
}
QUALITY_DOCS = 6  # 675 SmolLM2 tokens: the text of the quality table in docs/scratch.md


def quality_text() -> str:
    lines = (ROOT / "tasks/language_modelling/lm_en.jsonl").read_text(encoding="utf-8").splitlines()
    return "\n\n".join(json.loads(line)["text"] for line in lines[:QUALITY_DOCS])


def worker(label: str, new_tokens: int, repeats: int) -> dict:
    import torch

    from harness.models import load_model

    spec, options = CONFIGS[label]
    started = time.perf_counter()
    lm = load_model(spec, batch_size=1, **options)
    load_s = time.perf_counter() - started
    prompt = lm.tok_encode(PROMPT)

    def decode_seconds() -> float:
        stamps: list[float] = []
        lm.stream_token_ids([prompt], new_tokens, lambda _row, _tok: stamps.append(time.perf_counter()))
        return stamps[-1] - stamps[0]

    decode_seconds()  # warm-up
    best = min(decode_seconds() for _ in range(repeats))
    ids = [lm.prefix_token_id, *lm.tok_encode(quality_text())]
    with torch.inference_mode():
        logits = lm.position_logits(ids).float()
    lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    extra = lm.info.to_dict().get("extra", {})
    return {"label": label, "load_s": load_s, "decode_tok_s": (new_tokens - 1) / best,
            "ppl": math.exp(-float(lp.mean())), "tokens": len(ids), "threads": torch.get_num_threads(),
            "kernels": extra.get("kernels"), "quant_kernels": extra.get("quant_kernels"),
            "decode_kernels": extra.get("decode_kernels"),
            "n_threads": extra.get("n_threads")}


GEMV_SHAPES = {"wqkv": (960, 576), "wo": (576, 576), "w13": (3072, 576), "w2": (576, 1536), "head": (49152, 576)}


def gemv(rows: int, seconds: float = 0.5) -> None:
    """One product per layer shape and kernel (see the module docstring), as a markdown table."""
    import torch

    from harness.models.scratch import cpu_quant_kernel
    from harness.models.scratch.packing import Linear
    from harness.models.scratch.quant import QuantLinear, avx2_works, int4pack_works, int8pack_works

    kernels = [("float32 oneDNN", None, "onednn")]
    kernels += [("int8 " + k, "int8", k) for k, ok in (("aten-int8pack", int8pack_works()), ("avx2-int8", avx2_works("int8"))) if ok]
    kernels += [("int4 " + k, "int4", k) for k, ok in (("aten-int4pack", int4pack_works(32)), ("avx2-int4", avx2_works("int4", 32))) if ok]
    print(f"rows {rows}, torch threads {torch.get_num_threads()}, compiled AVX2 kernels: "
          f"{cpu_quant_kernel.load().reason or 'loaded'}")
    print("| shape (out x in) | " + " | ".join(k[0] for k in kernels) + " |")
    print("|---|" + "---|" * len(kernels))
    for name, (n, k) in GEMV_SHAPES.items():
        lin = Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.normal_(0, 0.05)
        x = torch.randn(rows, k)
        cells = []
        for _label, scheme, kernel in kernels:
            if scheme is None:
                w = lin.weight.detach()
                call = functools.partial(torch.ops.mkldnn._linear_pointwise, x, w, None, "none", [], "")
                nbytes = n * k * 4
            else:
                layer = QuantLinear(lin, scheme, 32 if scheme == "int4" else None, kernel)
                call = functools.partial(layer, x)
                nbytes = layer.qweight.numel() + layer.scales.numel() * 4
            with torch.inference_mode():
                for _ in range(3):
                    call()
                best, spent = float("inf"), 0.0
                while spent < seconds:
                    t0 = time.perf_counter()
                    call()
                    dt = time.perf_counter() - t0
                    best, spent = min(best, dt), spent + dt
            cells.append(f"{best * 1e6:.0f} us ({nbytes / best / 1e9:.1f} GB/s)")
        print(f"| {name} {n} x {k} | " + " | ".join(cells) + " |")


def run_worker(label: str, new_tokens: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", label, "--new-tokens", str(new_tokens), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"label": label, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="a subset of the configurations")
    parser.add_argument("--gemv", action="store_true", help="time one product per layer shape instead")
    parser.add_argument("--rows", type=int, default=1, help="activation rows for --gemv")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.new_tokens, args.repeats)))
        return
    if args.gemv:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        gemv(args.rows)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    import torch

    from harness.benchmark.machine import describe, machine

    m = machine()
    print(f"{MODEL}, torch {torch.__version__}; {describe(m)}")
    print(f"CPU flags: {' '.join(m['cpu_flags'])}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    for label in args.only or CONFIGS:
        rows.append(run_worker(label, args.new_tokens, args.repeats))
        print(f"  done: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)  # kept if the run is cut short
    ok = {r["label"]: r for r in rows if "error" not in r}
    base = ok.get("scratch float32")
    llama, hf = ok.get("llama.cpp (GGUF Q4_1)"), ok.get("transformers float32")
    print()
    print("| configuration | kernels | load (s) | decode b=1 (tok/s) | vs llama.cpp | vs transformers "
          "| perplexity | vs scratch float32 |")
    print("|" + "---|" * 8)
    for r in rows:
        if "error" in r:
            print(f"| {r['label']} | failed: {r['error']} |" + " |" * 6)
            continue
        kernels = r["quant_kernels"] or r["kernels"] or (f"{r['n_threads']} threads" if r["n_threads"] else "")
        if r["quant_kernels"]:
            kernels += f" (rest {r['kernels']})"
        if r.get("decode_kernels"):
            kernels += f"; decode step {r['decode_kernels']}"
        rate = r["decode_tok_s"]
        vs_llama = f"{rate / llama['decode_tok_s']:.2f}x" if llama else "-"
        vs_hf = f"{rate / hf['decode_tok_s']:.2f}x" if hf else "-"
        vs_base = f"{r['ppl'] / base['ppl'] - 1:+.3%}" if base else "-"
        print(f"| {r['label']} | {kernels} | {r['load_s']:.2f} | {rate:.1f} | {vs_llama} | {vs_hf} "
              f"| {r['ppl']:.4f} | {vs_base} |")
    if base:
        print(f"\nperplexity over {base['tokens']} tokens of the first {QUALITY_DOCS} lm_en documents; "
              f"torch threads {base['threads']}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
