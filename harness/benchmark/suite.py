"""Models x shapes: one fresh process per model, then the results file (`"kind": "benchmark"`).

Each evaluation carries `model` (the backend's info and fingerprint, as `harness run` writes it),
`efficiency` (the one-number figures the leaderboard shows: medians over repetitions) and `bench`
(every shape with median, spread and the raw repetitions; load, memory, threads). Figures of
`efficiency`:

| key | what | shape |
| --- | --- | --- |
| load_s | seconds to load the model (median over --load-repetitions fresh processes) | - |
| ttft_s | time to first token | reference: shortest prompt, smallest batch |
| prefill_tokens_per_s | prompt tokens per second | reference |
| decode_tokens_per_s | new tokens per second after the first | reference |
| batch_decode_tokens_per_s | the same over the whole batch | shortest prompt, largest batch |
| batch_requests_per_s | requests finished per second, end to end | shortest prompt, largest batch |
| peak_memory_mib | peak resident memory of the process (CPU) or allocated GPU memory (CUDA) | all |
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.benchmark.machine import cpu_busy_percent, load_average, machine
from harness.benchmark.measure import BenchSettings, Shape, summarize
from harness.errors import HarnessError
from harness.preflight import RunFolder, check_model_specs, reserve_run
from harness.results import ModelEvaluation, ModelRecord, RunResults, environment

FIGURES = ("load_s", "ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s", "batch_decode_tokens_per_s",
           "batch_requests_per_s", "peak_memory_mib")
# figure -> (shape record key, which shape)
_SHAPE_FIGURES = {"ttft_s": ("ttft_s", "reference"), "prefill_tokens_per_s": ("prefill_tokens_per_s", "reference"),
                  "decode_tokens_per_s": ("decode_tokens_per_s", "reference"),
                  "batch_decode_tokens_per_s": ("decode_tokens_per_s", "batched"),
                  "batch_requests_per_s": ("requests_per_s", "batched")}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_worker(spec: str, settings: BenchSettings, *, load_only: bool = False) -> dict[str, Any]:
    """Measure one model in a fresh Python process; its record, or {"error": ...}."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"spec": spec, "settings": settings.to_dict(), "load_only": load_only}))
        try:
            proc = subprocess.run([sys.executable, "-m", "harness.benchmark.worker", str(job), str(out)],
                                  env=env, timeout=settings.timeout, stdout=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {settings.timeout:g} s (--timeout)"}
        if not out.is_file():
            return {"error": f"the measuring process died (exit code {proc.returncode}); its messages are above"}
        return json.loads(out.read_text())


def run_in_process(spec: str, settings: BenchSettings, *, load_only: bool = False) -> dict[str, Any]:
    """Measure in this process: quicker, but load time and memory include what ran before."""
    from harness.benchmark.worker import measure

    try:
        return measure(spec, settings, load_only)
    except HarnessError as err:
        return {"error": str(err)}


def summary_figures(record: dict[str, Any], settings: BenchSettings, load_times: Sequence[float]) -> dict[str, float]:
    """The `efficiency` figures of one model (medians), from its worker record."""
    shapes = {(s["prompt_tokens"], s["batch_size"], s["new_tokens"]): s for s in record.get("shapes", [])}
    picked = {"reference": _shape(shapes, settings.reference_shape),
              "batched": _shape(shapes, settings.batched_shape) if max(settings.batch_sizes) > min(settings.batch_sizes)
              else None}
    out: dict[str, float] = {"load_s": _round(summarize(load_times)["median"])}
    for figure, (key, which) in _SHAPE_FIGURES.items():
        shape = picked[which]
        if shape is not None:
            out[figure] = _round(shape[key]["median"])
    gpu = record.get("peak_gpu_allocated_mib")
    memory = gpu if gpu is not None else record.get("peak_rss_mib")  # GPU memory is measured only on CUDA
    if memory is not None:
        out["peak_memory_mib"] = _round(memory)
    return out


def figure_details(record: dict[str, Any], settings: BenchSettings, load_times: Sequence[float]) -> dict[str, Any]:
    """Per efficiency figure: its median, spread, repetitions and shape (what compare reports)."""
    shapes = {(s["prompt_tokens"], s["batch_size"], s["new_tokens"]): s for s in record.get("shapes", [])}
    out: dict[str, Any] = {"load_s": {**summarize(load_times), "shape": None}}
    for figure, (key, which) in _SHAPE_FIGURES.items():
        shape = settings.reference_shape if which == "reference" else settings.batched_shape
        found = _shape(shapes, shape)
        if found is not None and (which == "reference" or max(settings.batch_sizes) > min(settings.batch_sizes)):
            out[figure] = {**found[key], "shape": shape.label}
    memory = summary_figures(record, settings, load_times).get("peak_memory_mib")
    if memory is not None:  # one high-water mark over the whole process, not a median
        out["peak_memory_mib"] = {**summarize([memory]), "shape": None, "peak": True}
    return out


def _shape(shapes: dict, shape: Shape) -> dict[str, Any] | None:
    return shapes.get((shape.prompt_tokens, shape.batch_size, shape.new_tokens))


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def benchmark(specs: Sequence[str], settings: BenchSettings | None = None, *, output_dir: str | Path | None = None,
              in_process: bool = False, command: str | None = None,
              progress: Callable[[str], None] | None = _stderr) -> RunResults:
    """Measure each model spec; returns the typed results (and writes them under output_dir).
    The specs and the output folder are checked, and the results file created, before any model loads."""
    settings = settings or BenchSettings()
    if not specs:
        raise HarnessError("no model to benchmark; give --model SPEC (repeatable)")
    check_model_specs(list(specs))
    try:
        import torch  # noqa: F401 - so the environment records torch's threads and GPUs
    except ImportError:
        pass
    started = dt.datetime.now(dt.UTC)
    slug = "+".join(s.replace(":", "-").split("/")[-1] for s in specs)[:60]
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + "_bench_" + "".join(c if c.isalnum() or c in "._+-" else "-" for c in slug)
    results = RunResults(
        run_id, kind="benchmark", status="running", created=started.isoformat(timespec="seconds"), command=command,
        options={**settings.to_dict(), "in_process": in_process,
                 "reference_shape": settings.reference_shape.label, "batched_shape": settings.batched_shape.label},
        environment={**environment(), "machine": machine()},
    )
    folder = reserve_run(output_dir, run_id) if output_dir is not None else None
    if folder:
        results.run_id, results.path = folder.run_id, folder.results_path
        folder.save(results.to_dict())
        folder.samples_dir.rmdir()  # only the reservation: a benchmark writes no per-sample files
    try:
        _measure_all(results, specs, settings, in_process, folder, progress)
    except BaseException as err:
        results.status, results.error = "partial", str(err).splitlines()[0] if str(err) else type(err).__name__
        if folder:
            folder.save(results.to_dict())
        raise
    results.status = "complete"
    results.finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if folder:
        folder.save(results.to_dict())
    return results


def _measure_all(results: RunResults, specs: Sequence[str], settings: BenchSettings, in_process: bool,
                 folder: RunFolder | None, progress: Callable[[str], None] | None) -> None:
    for spec in specs:
        if progress:
            progress(f"{spec}: measuring in {'this process' if in_process else 'a fresh process'} "
                     f"({len(settings.shapes())} shapes x ({settings.warmup} warm-up + {settings.repetitions} timed))")
        record = run_in_process(spec, settings) if in_process else run_worker(spec, settings)
        if "error" in record:
            results.errors.append({"spec": spec, "error": record["error"]})
            if progress:
                progress(f"{spec}: FAILED: {record['error']}")
            continue
        load_times = [record["load_s"]]
        for _ in range(settings.load_repetitions - 1):
            again = (run_in_process if in_process else run_worker)(spec, settings, load_only=True)
            if "error" not in again:
                load_times.append(again["load_s"])
        results.evaluations.append(ModelEvaluation(
            ModelRecord.from_dict(record["model"]),
            efficiency=summary_figures(record, settings, load_times),
            bench={
                "isolated": not in_process,
                "load_s": summarize(load_times), "import_s": record["import_s"],
                "rss_after_load_mib": record["rss_after_load_mib"], "load_peak_rss_mib": record["load_peak_rss_mib"],
                "peak_rss_mib": record["peak_rss_mib"], "peak_gpu_allocated_mib": record["peak_gpu_allocated_mib"],
                "threads": record["threads"], "machine": record["machine"],
                "reference_shape": settings.reference_shape.label,
                "batched_shape": settings.batched_shape.label,
                "figures": figure_details(record, settings, load_times),
                "shapes": record["shapes"],
            },
        ))
        if folder:
            folder.save(results.to_dict())  # each measured model is kept if a later one fails
    results.environment["machine"]["load_average_after"] = load_average()
    results.environment["machine"]["cpu_busy_percent_after"] = cpu_busy_percent()
