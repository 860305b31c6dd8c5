"""Batch-1 decode speed and quality of the scratch decoder's quantized weights, beside llama.cpp
and transformers on the same GGUF (SmolLM2-135M, CPU), in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quant.py [--new-tokens 64] [--repeats 3]

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
            "n_threads": extra.get("n_threads")}


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
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.new_tokens, args.repeats)))
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
