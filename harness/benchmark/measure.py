"""Timing one loaded model on a grid of shapes: warm-up runs, then timed repetitions.

One run of a shape generates `new_tokens` tokens greedily (EOS ignored) for `batch_size` prompts of
`prompt_tokens` tokens each and stamps every token as it appears (adapters.py). From the stamps:

- time to first token (TTFT): from the call to the first token of the batch;
- decode: the time during which rows were producing their 2nd..last tokens (the union of each
  row's [first token, last token] interval: one interval for a batched backend, one per row for a
  backend that runs rows one after another), and decode tokens/s = those tokens / that time;
- prefill: the rest of the time up to the last token (for a batched backend, TTFT itself), and
  prefill tokens/s = batch_size x prompt_tokens / that time;
- end to end: requests/s = batch_size / wall time of the call, generated tokens/s =
  batch_size x new_tokens / wall time (what benchmarks/bench_scratch.py calls decode tokens/s).
Each figure is summarized over the repetitions by its median, min, max and half-range.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.benchmark.adapters import token_streamer
from harness.benchmark.machine import MemoryProbe
from harness.errors import HarnessError

# The text that prompts are cut from (repeated as needed): plain English prose, so tokenizers
# split it as they split real input.
PASSAGE = (
    "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz "
    "combined movable metal type, an oil-based ink and a wooden screw press adapted from those used "
    "to make wine. Within fifty years, presses were working in more than two hundred cities across "
    "Europe, and the price of a book fell to a fraction of what a scribe had charged. Printers "
    "standardized spelling, numbered pages and added indexes; scholars could compare the same "
    "edition in different libraries, and merchants printed price lists, calendars and maps. "
)

RUN_FIGURES = ("ttft_s", "prefill_s", "decode_s", "total_s", "prefill_tokens_per_s", "decode_tokens_per_s",
               "requests_per_s", "generated_tokens_per_s")


@dataclass(frozen=True)
class Shape:
    prompt_tokens: int
    batch_size: int
    new_tokens: int

    @property
    def label(self) -> str:
        return f"p{self.prompt_tokens} b{self.batch_size} n{self.new_tokens}"


@dataclass
class BenchSettings:
    """The shapes and how often to run them. The defaults keep the four-model comparison of
    docs/bench.md at about 6.5 minutes on a 2-core CPU; the common standard shapes are
    prompt_lengths=[128, 1024], batch_sizes=[1, 8], new_tokens=128."""

    prompt_lengths: list[int] = field(default_factory=lambda: [128, 512])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    new_tokens: int = 64
    repetitions: int = 3
    warmup: int = 1
    load_repetitions: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    timeout: float | None = 1800.0

    def __post_init__(self) -> None:
        checks = [(self.prompt_lengths, "prompt lengths", 2), (self.batch_sizes, "batch sizes", 1)]
        for values, what, low in checks:
            if not values or any(int(v) < low for v in values):
                raise HarnessError(f"{what} must be integers of at least {low}; got {values}")
        if self.new_tokens < 2:
            raise HarnessError("--new-tokens must be at least 2 (decode speed needs a second token)")
        if self.repetitions < 1 or self.warmup < 0 or self.load_repetitions < 1:
            raise HarnessError("--repetitions and --load-repetitions must be at least 1, --warmup at least 0")
        if self.threads is not None and self.threads < 1:
            raise HarnessError("--threads must be at least 1")

    def shapes(self) -> list[Shape]:
        return [Shape(p, b, self.new_tokens) for p in sorted(set(self.prompt_lengths))
                for b in sorted(set(self.batch_sizes))]

    @property
    def reference_shape(self) -> Shape:
        """The shape of the one-number summary: a single request of the shortest prompt."""
        return Shape(min(self.prompt_lengths), min(self.batch_sizes), self.new_tokens)

    @property
    def batched_shape(self) -> Shape:
        return Shape(min(self.prompt_lengths), max(self.batch_sizes), self.new_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements (half-range: half of max - min)."""
    values = [float(v) for v in values]
    med = statistics.median(values)
    half = (max(values) - min(values)) / 2
    return {"median": med, "min": min(values), "max": max(values), "half_range": half,
            "relative_half_range": half / med if med else None, "n": len(values), "values": values}


def make_prompts(lm, shape: Shape) -> list[list[int]]:
    """batch_size prompts of exactly prompt_tokens tokens: the prefix token (BOS), then the passage
    repeated; each row starts at a different place so no two rows are the same."""
    text = lm.tok_encode(PASSAGE)
    if not text:
        raise HarnessError("the tokenizer returned no tokens for the benchmark passage")
    need = shape.prompt_tokens - 1
    reps = need // len(text) + 2
    cycle = text * reps
    return [[lm.prefix_token_id, *cycle[(row * 17) % len(text):][:need]] for row in range(shape.batch_size)]


def time_run(stream, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    """One generation call, timed token by token (see the module docstring)."""
    rows = len(prompts)
    first = [0.0] * rows
    last = [0.0] * rows
    count = [0] * rows
    clock = time.perf_counter

    def on_token(row: int, _token: int) -> None:
        now = clock()
        if count[row] == 0:
            first[row] = now
        last[row] = now
        count[row] += 1

    start = clock()
    stream(prompts, new_tokens, on_token)
    end = clock()
    if any(c != new_tokens for c in count):
        raise HarnessError(f"the backend produced {count} tokens per row, not {new_tokens} each")
    decode = _union_length(sorted(zip(first, last)))
    ttft = min(first) - start
    prefill = max(last) - start - decode
    total = end - start
    prompt_tokens = sum(len(p) for p in prompts)
    decode_tokens = rows * (new_tokens - 1)
    return {
        "ttft_s": ttft, "prefill_s": prefill, "decode_s": decode, "total_s": total,
        "prefill_tokens_per_s": prompt_tokens / prefill if prefill > 0 else float("nan"),
        "decode_tokens_per_s": decode_tokens / decode if decode > 0 else float("nan"),
        "requests_per_s": rows / total, "generated_tokens_per_s": rows * new_tokens / total,
    }


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for a, b in intervals:
        if cur_end is None or a > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def measure_model(lm, settings: BenchSettings, *, progress: Callable[[str], None] | None = None,
                  memory: MemoryProbe | None = None) -> list[dict[str, Any]]:
    """Every shape of `settings` on a loaded model: warm-up runs, then timed repetitions, each
    shape's peak memory. Returns one record per shape."""
    stream = token_streamer(lm)
    memory = memory or MemoryProbe(settings.device)
    limit = getattr(lm, "max_length", None)
    records = []
    for shape in settings.shapes():
        if limit is not None and shape.prompt_tokens + shape.new_tokens > limit:
            raise HarnessError(f"{shape.label}: {shape.prompt_tokens} + {shape.new_tokens} tokens exceed the "
                               f"model's context of {limit}")
        prompts = make_prompts(lm, shape)
        memory.reset()
        for _ in range(settings.warmup):
            time_run(stream, prompts, shape.new_tokens)
        runs = [time_run(stream, prompts, shape.new_tokens) for _ in range(settings.repetitions)]
        record: dict[str, Any] = {**asdict(shape), "label": shape.label, "warmup": settings.warmup,
                                  "repetitions": settings.repetitions, **memory.peak()}
        for name in RUN_FIGURES:
            record[name] = summarize([r[name] for r in runs])
        records.append(record)
        if progress:
            progress(f"{shape.label}: decode {record['decode_tokens_per_s']['median']:.1f} tok/s, "
                     f"TTFT {record['ttft_s']['median']:.3f} s, peak RSS {record['peak_rss_mib']:.0f} MiB")
    return records
