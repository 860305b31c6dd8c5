"""Speed and memory of the scratch decoder beside transformers, on SmolLM2-135M (CPU).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scratch.py

Each configuration runs in its own process (so peak resident memory is its own): load time,
scoring throughput over a 16 x 512 batch (every position scored, as in rolling perplexity),
greedy decode tokens/s at batch 1 and 8 (64 new tokens, EOS suppressed), peak RSS; each timing
is the best of three runs after a warm-up. transformers
is measured through the harness's hf backend (its cached plain copy of the GGUF) and, for load
time, also straight from the GGUF file (`from_pretrained(..., gguf_file=...)`), which is the path
a user without the harness takes. Load average is printed: on a shared machine, rerun when busy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL = "smollm2-135m"
SCORE_BATCH, SCORE_LEN, NEW_TOKENS = 16, 512, 64
PROMPT = "The history of the printing press begins in the fifteenth century, when"


def busy_cpu_seconds() -> float:
    """CPU seconds spent by every process on the machine so far (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


REPEATS = 3  # each timing is the best of this many runs: the machine may be shared


def timed(fn, *args, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def score_pairs(lm) -> list[tuple[list[int], list[int]]]:
    import torch

    g = torch.Generator().manual_seed(0)
    rows = torch.randint(100, 40000, (SCORE_BATCH, SCORE_LEN + 1), generator=g).tolist()
    return [(r[:1], r[1:]) for r in rows]  # input = 512 tokens, all 512 positions scored


def worker(backend: str, dtype: str) -> dict:
    import torch

    result = {"backend": backend, "dtype": dtype, "threads": torch.get_num_threads()}
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    if backend == "transformers-gguf":  # load time only, straight from the GGUF file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from harness.models.zoo import ZOO

        path = ZOO[MODEL].path()
        seconds, _ = timed(lambda: (AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name),
                                    AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                         dtype=getattr(torch, dtype))))
        return {**result, "load_s": seconds, "peak_rss_gb": peak_rss_gb()}
    if backend == "scratch":
        from harness.models.scratch import ScratchLanguageModel
        from harness.models.scratch.generate import generate_tokens

        load_s, lm = timed(lambda: ScratchLanguageModel(MODEL, dtype=dtype, batch_size=SCORE_BATCH))

        def decode(prompts):  # no EOS: always NEW_TOKENS tokens per row
            return generate_tokens(lm.model, prompts, NEW_TOKENS, pad_id=lm.tokenizer.pad_token_id)
    else:
        from harness.models.hf import HFLanguageModel

        load_s, lm = timed(lambda: HFLanguageModel(MODEL, dtype=dtype, batch_size=SCORE_BATCH))

        def decode(prompts):
            ids = torch.tensor(prompts)  # equal lengths: no padding needed
            with torch.inference_mode():
                out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                        temperature=None, top_p=None, top_k=None, pad_token_id=2)
            assert out.shape[1] == ids.shape[1] + NEW_TOKENS
            return out

    result["load_s"] = load_s
    pairs = score_pairs(lm)
    lm.score_token_batch(pairs[:2])  # warm up
    seconds, _ = timed(lm.score_token_batch, pairs, repeats=REPEATS)
    result["score_tok_s"] = SCORE_BATCH * SCORE_LEN / seconds
    prompt = lm.tok_encode(PROMPT)
    decode([prompt])
    for batch in (1, 8):
        seconds, _ = timed(decode, [prompt] * batch, repeats=REPEATS)
        result[f"decode_b{batch}_tok_s"] = batch * NEW_TOKENS / seconds
    result["peak_rss_gb"] = peak_rss_gb()
    # CPU time other processes took while this one ran, as a share of the machine
    others = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
    result["others_share"] = max(0.0, others) / ((time.perf_counter() - wall0) * (os.cpu_count() or 1))
    return result


def run_worker(backend: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} {dtype} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    import torch

    print(f"SmolLM2-135M on CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    # warm the caches the backends keep (converted tokenizer / transformers copy, file hashes)
    run_worker("scratch", "float32")
    rows = []
    for dtype in args.dtypes:
        for backend in ("scratch", "transformers"):
            rows.append(run_worker(backend, dtype))
            print(f"  done: {backend} {dtype}", file=sys.stderr, flush=True)
    gguf = {dtype: run_worker("transformers-gguf", dtype) for dtype in args.dtypes}

    header = ("| backend | dtype | load (s) | scoring 16x512 (tok/s) | decode b=1 (tok/s) "
              "| decode b=8 (tok/s) | peak RSS (GB) |")
    print()
    print(header)
    print("|" + "---|" * 7)
    by = {(r["backend"], r["dtype"]): r for r in rows}
    for r in rows:
        load = f"{r['load_s']:.2f}"
        if r["backend"] == "transformers":
            load += f" ({gguf[r['dtype']]['load_s']:.1f} from GGUF)"
        print(f"| {r['backend']} | {r['dtype']} | {load} | {r['score_tok_s']:.0f} | {r['decode_b1_tok_s']:.1f} "
              f"| {r['decode_b8_tok_s']:.1f} | {r['peak_rss_gb']:.2f} |")
    busy = [f"{r['backend']} {r['dtype']} ({r['others_share']:.0%})" for r in rows if r["others_share"] > 0.05]
    if busy:
        print(f"\nwarning: other processes took CPU during {', '.join(busy)} of the machine; rerun when idle")
    print()
    base = by[("transformers", "float32")]
    for dtype in args.dtypes:
        s, t = by[("scratch", dtype)], by[("transformers", dtype)]
        print(f"scratch {dtype}: load {gguf[dtype]['load_s'] / s['load_s']:.1f}x faster than transformers from GGUF; "
              f"scoring {s['score_tok_s'] / t['score_tok_s']:.1f}x, decode b=1 {s['decode_b1_tok_s'] / t['decode_b1_tok_s']:.1f}x, "
              f"b=8 {s['decode_b8_tok_s'] / t['decode_b8_tok_s']:.1f}x transformers {dtype}; "
              f"decode b=1 {s['decode_b1_tok_s'] / base['decode_b1_tok_s']:.1f}x transformers float32")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
