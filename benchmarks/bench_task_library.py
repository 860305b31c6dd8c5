"""Loading lm-evaluation-harness's task library (about 14,000 YAML files): seconds to index it,
to validate every task, and what `harness tasks --include-path` costs end to end.

    .venv/bin/python benchmarks/bench_task_library.py [--tasks-dir DIR] [--repeat 3]

"cold" parses every file (an empty parse cache in a temporary HARNESS_CACHE_DIR); "warm" reads
the parse cache that the cold run wrote (files unchanged since, by modification time and size).
Each phase runs in a fresh process, so Python's own caches do not help; the median of --repeat
runs is printed with the range. lm-eval's own TaskManager() is timed beside it for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PHASES = """
import json, sys, time
t0 = time.perf_counter()
from harness.registry import TaskRegistry
t1 = time.perf_counter()
registry = TaskRegistry([sys.argv[1]], trust_task_code=sys.argv[2] == "1")
t2 = time.perf_counter()
summary = registry.summary()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "index": t2 - t1, "validate": t3 - t2, "usable": summary["usable"],
                  "unavailable": summary["unavailable"]}))
"""

LM_EVAL = """
import json, sys, time
t0 = time.perf_counter()
from lm_eval.tasks import TaskManager
t1 = time.perf_counter()
TaskManager()
print(json.dumps({"import": t1 - t0, "index": time.perf_counter() - t1}))
"""


def run(code: str, args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import lm_eval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks-dir", default=str(Path(lm_eval.__file__).parent / "tasks"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-lm-eval", action="store_true")
    args = parser.parse_args()
    rows = []
    for trust in ("0", "1"):
        for phase in ("cold", "warm"):
            samples = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as cache:
                    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": cache}
                    if phase == "warm":
                        run(PHASES, [args.tasks_dir, trust], env)  # fill the parse cache
                    samples.append(run(PHASES, [args.tasks_dir, trust], env))
            rows.append((f"harness {phase}, trust={trust}", samples))
    if not args.skip_lm_eval:
        rows.append(("lm-eval TaskManager()", [run(LM_EVAL, [], dict(os.environ)) for _ in range(args.repeat)]))
    print(f"{'what':<28} {'index s':>16} {'validate s':>16} {'usable':>7} {'unavailable':>11}")
    for label, samples in rows:
        def cell(key: str) -> str:
            values = [s[key] for s in samples if key in s]
            if not values:
                return "-"
            return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
        last = samples[-1]
        print(f"{label:<28} {cell('index'):>16} {cell('validate'):>16} {last.get('usable', '-'):>7} {last.get('unavailable', '-'):>11}")


if __name__ == "__main__":
    main()
