"""Speed and memory of models and backends (`harness bench`): load time, time to first token,
prefill and decode throughput, requests/s and peak memory on standard shapes, each model measured
in a fresh process, written in the results schema (`"kind": "benchmark"`) that the reporter reads.

    from harness.benchmark import BenchSettings, Shape, benchmark
    results = benchmark(["llamacpp:smollm2-135m"], BenchSettings(prompt_lengths=[16], batch_sizes=[1], new_tokens=8))
"""

from harness.benchmark.measure import BenchSettings, Shape, measure_model
from harness.benchmark.suite import benchmark, summary_figures

__all__ = ["BenchSettings", "Shape", "benchmark", "measure_model", "summary_figures"]
