"""Load time of a GGUF model through transformers: its own GGUF path (dequantize + tokenizer
conversion on every load) against the hf backend's cached plain copy, each in a fresh process.

    .venv/bin/python benchmarks/bench_hf_load.py [--model smollm2-135m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

PEER = """
import time, os
t = time.perf_counter()
from transformers import AutoModelForCausalLM, AutoTokenizer
from harness.models.zoo import ZOO
p = ZOO[{name!r}].path()
AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name)
print(time.perf_counter() - t)
"""

OURS = """
import time
t = time.perf_counter()
from harness.models.hf import HFLanguageModel
HFLanguageModel({name!r})
print(time.perf_counter() - t)
"""


def timed(code: str) -> float:
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    timed(OURS.format(name=args.model))  # makes the cached copy once (not timed)
    peer = [timed(PEER.format(name=args.model)) for _ in range(args.repeats)]
    ours = [timed(OURS.format(name=args.model)) for _ in range(args.repeats)]
    p, o = statistics.median(peer), statistics.median(ours)
    print(f"model: {args.model}   repeats: {args.repeats} (median, seconds, fresh process each, imports included)")
    print(f"{'transformers GGUF load':<32}{p:8.2f} s")
    print(f"{'hf backend, cached copy':<32}{o:8.2f} s")
    print(f"{'speed-up':<32}{p / o:8.1f} x")


if __name__ == "__main__":
    main()
