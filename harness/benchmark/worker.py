"""One model's measurement in a fresh process, so its load time and peak memory are its own.

    python -m harness.benchmark.worker JOB.json OUT.json

JOB: {"spec": ..., "settings": BenchSettings as a dict, "load_only": bool}. OUT: the record that
suite.py assembles, or {"error": message} for an error the user can fix.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness.benchmark.machine import MIB, MemoryProbe, current_rss_bytes, machine
from harness.benchmark.measure import BenchSettings, measure_model
from harness.errors import HarnessError


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def measure(spec: str, settings: BenchSettings, load_only: bool = False) -> dict[str, Any]:
    from harness.models import BACKENDS, backend_class, load_model, split_spec

    backend, _ = split_spec(spec)
    options: dict[str, Any] = {"dtype": settings.dtype, "device": settings.device,
                               "batch_size": max(settings.batch_sizes)}
    if settings.threads and "n_threads" in (getattr(backend_class(backend), "accepted_options", None) or ()):
        options["n_threads"] = settings.threads
    started = time.perf_counter()
    module = importlib.import_module(BACKENDS[backend].partition(":")[0])
    torch = sys.modules.get("torch")  # the hf and scratch modules import it; llamacpp does not
    if torch is not None and settings.threads:
        torch.set_num_threads(settings.threads)
    import_s = time.perf_counter() - started
    probe = MemoryProbe(settings.device)
    probe.reset()
    started = time.perf_counter()
    lm = load_model(spec, **options)
    load_s = time.perf_counter() - started
    info = lm.info.to_dict()
    probe.device = str(info.get("device") or settings.device)  # --device auto: where the backend put it
    load_peak = probe.peak()
    record: dict[str, Any] = {
        "model": {**info, "fingerprint": lm.fingerprint},
        "import_s": import_s, "load_s": load_s,
        "rss_after_load_mib": round(current_rss_bytes() / MIB, 1),
        "load_peak_rss_mib": load_peak["peak_rss_mib"],
        "load_peak_gpu_allocated_mib": load_peak["peak_gpu_allocated_mib"],
        "module": module.__name__,
        # which matrix-product kernels ran (the scratch backend's per-CPU choice), beside the machine
        "kernels": info.get("extra", {}).get("kernels"),
    }
    if not load_only:
        kernels = f", kernels {record['kernels']}" if record["kernels"] else ""
        progress(f"{spec}: loaded in {load_s:.2f} s (imports {import_s:.2f} s){kernels}")
        shapes = measure_model(lm, settings, progress=lambda m: progress(f"{spec}: {m}"), memory=probe)
        record["shapes"] = shapes
        rss = [load_peak["peak_rss_mib"], *(s["peak_rss_mib"] for s in shapes)]
        gpu = [x for x in [load_peak["peak_gpu_allocated_mib"], *(s["peak_gpu_allocated_mib"] for s in shapes)]
               if x is not None]
        record["peak_rss_mib"] = max(rss)
        record["peak_gpu_allocated_mib"] = max(gpu) if gpu else None
    torch = sys.modules.get("torch")
    record["threads"] = {"torch": torch.get_num_threads() if torch is not None else None,
                         "backend": info.get("extra", {}).get("n_threads")}
    record["machine"] = machine()
    lm.close()
    return record


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        settings = BenchSettings(**job["settings"])
        record = measure(job["spec"], settings, job.get("load_only", False))
        code = 0
    except HarnessError as err:
        record, code = {"error": str(err)}, 2
    except MemoryError:
        record, code = {"error": "out of memory"}, 2
    except Exception as err:  # noqa: BLE001 - reported to the parent with its traceback
        if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            record, code = {"error": f"out of GPU memory: {str(err).splitlines()[0]}"}, 2
        else:
            record, code = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}, 1
    out.write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
