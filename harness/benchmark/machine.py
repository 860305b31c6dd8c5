"""What a benchmark ran on (CPU, cores, GPU, threads, load) and how much memory it took.

Peak resident memory is the kernel's high-water mark (VmHWM), reset per shape through
/proc/self/clear_refs where Linux allows it, so each shape's peak is its own; elsewhere the
process-wide getrusage maximum. On CUDA, torch's peak allocated memory, reset per shape.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def peak_rss_bytes() -> int:
    """The resident-set high-water mark of this process since start (or the last reset)."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current resident set (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cuda(device: str):
    """torch, when this process measures a CUDA device through it; else None."""
    if not device.startswith("cuda") or "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    return torch if torch.cuda.is_available() else None


class MemoryProbe:
    """Peak memory over a stretch of work: resident memory always, allocated GPU memory on CUDA."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.resettable = reset_peak_rss()

    def reset(self) -> None:
        if self.resettable:
            reset_peak_rss()
        torch = _cuda(self.device)
        if torch is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict[str, float | None]:
        torch = _cuda(self.device)
        gpu = torch.cuda.max_memory_allocated() / MIB if torch is not None else None
        return {"peak_rss_mib": round(peak_rss_bytes() / MIB, 1),
                "peak_gpu_allocated_mib": None if gpu is None else round(gpu, 1)}


def cpu_busy_percent(seconds: float = 0.5) -> float | None:
    """How busy the CPUs are right now (all processes, sampled over `seconds`): other work on the
    machine makes timings noisy. The load average lags by minutes, so it is recorded but not used."""
    try:
        import psutil

        return psutil.cpu_percent(interval=seconds)
    except Exception:  # noqa: BLE001 - best effort
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_vector_flags() -> list[str]:
    """The CPU's vector-instruction flags that decide the kernels (AVX2, AVX-512, AMX, ...)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((x for x in f if x.startswith("flags")), "")
    except OSError:
        return []
    return sorted(f for f in line.partition(":")[2].split() if f.startswith(("avx", "amx", "fma")))


def machine() -> dict[str, Any]:
    """CPU model and cores, memory, GPUs, torch threads (when torch is loaded), load average."""
    import psutil

    from harness.results import cpu_model

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_cores_usable": usable,
        "cpu_flags": cpu_vector_flags(),
        "cpu_capability": None,  # torch's dispatch level (AVX2, AVX512, ...), when torch is loaded
        "memory_total_mib": round(psutil.virtual_memory().total / MIB),
        "platform": platform.platform(),
        "gpu": None,
        "torch_threads": None,
        "load_average": load_average(),
        "cpu_busy_percent": cpu_busy_percent(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            info["gpu"] = [{"name": torch.cuda.get_device_name(i),
                            "memory_mib": round(torch.cuda.get_device_properties(i).total_memory / MIB)}
                           for i in range(torch.cuda.device_count())]
    return info


def describe(m: dict[str, Any]) -> str:
    """One line: 'AMD EPYC 7B13 (AVX2), 2 cores (2 usable), 23 GiB, torch 2 threads, no GPU'."""
    cores = m.get("cpu_cores_physical") or m.get("cpu_cores_logical")
    gpu = ", ".join(g["name"] for g in m["gpu"]) if m.get("gpu") else "no GPU"
    threads = f", torch {m['torch_threads']} threads" if m.get("torch_threads") else ""
    capability = f" ({m['cpu_capability']})" if m.get("cpu_capability") else ""
    return (f"{m.get('cpu')}{capability}, {cores} cores ({m.get('cpu_cores_usable')} usable), "
            f"{(m.get('memory_total_mib') or 0) / 1024:.0f} GiB{threads}, {gpu}")



def best_seconds(fn: Callable[[], Any], repetitions: int) -> float:
    """The fastest of `repetitions` timed calls of fn, after one untimed warm-up call."""
    import time

    fn()
    seconds = []
    for _ in range(repetitions):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def memory_bandwidth(size_mib: int = 512, repetitions: int = 5) -> dict[str, Any]:
    """The memory bandwidth torch reaches here, in GB/s (1e9 bytes), over a float32 buffer of
    `size_mib` (far larger than any cache), best of `repetitions` after a warm-up, on torch's
    current threads. Reads are measured three ways, because no single kernel saturates memory on
    every CPU: `torch.sum`, a matrix-vector product (`torch.mv`, BLAS) and the same product
    through oneDNN (the scratch decoder's float32 kernel) where it exists; `copy` copies the
    buffer (bytes read plus bytes written). Where the system offers transparent huge pages (the
    scratch decoder keeps its weights on them), `sum` and `onednn_mv` are also timed over a buffer
    on 2 MiB pages (`*_huge_pages`), which reads faster than 4 KiB pages. `limit_gb_s` is the
    fastest read of all: a batch-1 decode step only reads its weights, so it cannot read them
    faster than that."""
    import torch

    cols = 4096
    rows = size_mib * MIB // 4 // cols
    src = torch.ones(rows, cols, dtype=torch.float32)
    dst = torch.empty_like(src)
    vec = torch.ones(cols, dtype=torch.float32)
    nbytes = rows * cols * 4

    def best(fn) -> float:  # noqa: ANN001
        return best_seconds(fn, repetitions)  # the warm-up touches every page

    reads = {"sum": nbytes / best(src.sum) / 1e9, "mv": nbytes / best(lambda: torch.mv(src, vec)) / 1e9}
    try:
        def onednn() -> Any:
            return torch.ops.mkldnn._linear_pointwise(vec[None], src, None, "none", [], "")

        onednn()
        reads["onednn_mv"] = nbytes / best(onednn) / 1e9
    except (AttributeError, RuntimeError):  # no oneDNN in this torch build
        pass
    copy = 2 * nbytes / best(lambda: dst.copy_(src)) / 1e9
    del dst
    from harness.models.scratch import hugepages

    huge = hugepages.empty((rows, cols))
    if huge is not None:
        huge.copy_(src)
        del src
        reads["sum_huge_pages"] = nbytes / best(huge.sum) / 1e9
        try:
            reads["onednn_mv_huge_pages"] = nbytes / best(
                lambda: torch.ops.mkldnn._linear_pointwise(vec[None], huge, None, "none", [], "")) / 1e9
        except (AttributeError, RuntimeError):
            pass
        del huge
    else:
        del src
    return {"read_gb_s": round(max(reads.values()), 2), "read_by_kernel_gb_s": {k: round(v, 2) for k, v in reads.items()},
            "copy_gb_s": round(copy, 2), "limit_gb_s": round(max(reads.values()), 2),
            "size_mib": size_mib, "repetitions": repetitions, "threads": torch.get_num_threads()}


# The matrix products of a decoder's pass over a batch of token positions (SmolLM2-135M's
# widths: hidden 576, MLP 1536, an eighth of its 49,152-token head) and one large square product,
# (m, k, n) for [m x k] @ [k x n]. A pass over 2,048 positions is what rolling perplexity and
# batched scoring run; the square is what BLAS libraries are tuned for. Sized so that the whole
# probe takes a few seconds on a 2-core AVX2 CPU.
GEMM_SHAPES: tuple[tuple[int, int, int], ...] = (
    (2048, 576, 1536),  # attention and MLP up-projections
    (2048, 1536, 576),  # MLP down-projection
    (2048, 576, 6144),  # a slice of the vocabulary head
    (1536, 1536, 1536),
)


def matmul_peak(shapes: tuple[tuple[int, int, int], ...] = GEMM_SHAPES, repetitions: int = 3) -> dict[str, Any]:
    """The float32 matrix-product rate torch reaches here, in GFLOP/s (1e9 multiply-adds x 2), on
    torch's current threads: per shape [m x k] @ [k x n] (2·m·k·n FLOPs), the best of
    `repetitions` after a warm-up, through each kernel a model may reach: `torch.mm` into a
    preallocated output, `torch.nn.functional.linear` against a [n x k] weight (the layout a
    model's Linear layers hold: transformers' path) and oneDNN's linear on that weight (the
    scratch decoder's float32 path) where this torch build has it. `peak_gflop_s` is the fastest
    of them all: a forward pass made of such products does not run faster on this machine."""
    import torch

    def best(fn) -> float:  # noqa: ANN001
        return best_seconds(fn, repetitions)  # the warm-up: first touch of the output, weight packing

    generator = torch.Generator().manual_seed(0)
    per_shape: list[dict[str, Any]] = []
    with torch.inference_mode():
        for m, k, n in shapes:
            a = torch.rand(m, k, generator=generator)
            b = torch.rand(k, n, generator=generator)
            weight = b.t().contiguous()
            out = torch.empty(m, n)
            flops = 2 * m * k * n
            rates = {"mm": flops / best(lambda: torch.mm(a, b, out=out)) / 1e9,
                     "linear": flops / best(lambda: torch.nn.functional.linear(a, weight)) / 1e9}
            try:  # oneDNN's linear, the scratch decoder's float32 kernel, where this torch has it
                rates["onednn"] = flops / best(lambda: torch.ops.mkldnn._linear_pointwise(
                    a, weight, None, "none", [], "")) / 1e9
            except (AttributeError, RuntimeError):
                pass
            # unrounded: a tiny shape on a busy machine may run at well under 0.01 GFLOP/s
            per_shape.append({"shape": f"[{m} x {k}] @ [{k} x {n}]", "m": m, "k": k, "n": n, "flops": flops,
                              "gflop_s": max(rates.values()), "gflop_s_by_kernel": rates})
            del a, b, weight, out
    return {"peak_gflop_s": max(s["gflop_s"] for s in per_shape), "shapes": per_shape,
            "repetitions": repetitions, "threads": torch.get_num_threads(), "dtype": "float32"}


def attention_rate(length: int, n_heads: int, head_dim: int, repetitions: int = 3) -> dict[str, Any]:
    """The rate torch's causal attention (`scaled_dot_product_attention`, `is_causal=True`, float32)
    reaches here over one window of `length` positions and `n_heads` heads of `head_dim`, in
    useful GFLOP/s: 4·n_heads·head_dim·length·(length + 1)/2, q·kᵀ and the weighted sum of v over
    the positions each attends (not the masked half a kernel may compute anyway); best of
    `repetitions` after a warm-up, on torch's current threads. Attention's products are thin
    (inner dimension head_dim), so they run well below `matmul_peak`."""
    import time

    import torch

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, n_heads, length, head_dim, generator=generator) for _ in range(3))
    seconds = []
    with torch.inference_mode():
        for rep in range(repetitions + 1):  # the first is a warm-up
            started = time.perf_counter()
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            if rep:
                seconds.append(time.perf_counter() - started)
    flops = 4 * n_heads * head_dim * length * (length + 1) // 2
    return {"gflop_s": flops / min(seconds) / 1e9, "length": length, "n_heads": n_heads,
            "head_dim": head_dim, "flops": flops, "repetitions": repetitions, "threads": torch.get_num_threads()}
