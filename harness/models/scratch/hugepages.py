"""The scratch decoder's weights on transparent huge pages (Linux), in the order a pass reads them.

A decode step streams every weight from memory once per token. With 4 KiB pages that is one TLB
entry per 4 KiB (about 130,000 page walks a token for SmolLM2-135M in float32), and the hardware
prefetchers stop at every page boundary; measured here, matrix-vector products over the model's
weights read about 22 GB/s from 4 KiB pages and about 27 GB/s from 2 MiB pages. Most kernels
enable transparent huge pages only for memory that asks (`enabled` = `madvise`), so the weights
are copied (before the model's first generation: backend.py) into one anonymous mapping advised
with MADV_HUGEPAGE, in module order
(each layer's matrices side by side, the head last). Each old copy is handed back to the system
(glibc's malloc_trim) as soon as it is replaced, so the move adds one tensor to the peak memory,
not the model.

Nothing changes where it cannot be done: not Linux, huge pages switched off (`never`), a tensor
on another device or in an opaque layout (oneDNN's packed bfloat16). `HARNESS_HUGE_PAGES=0` turns
it off. Values are copied bit for bit.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from pathlib import Path

import torch
from torch import Tensor, nn

ENV = "HARNESS_HUGE_PAGES"
HUGE = 2 << 20  # the x86-64 transparent huge page
MIN_BYTES = 1 << 20  # smaller tensors (norm scales, biases) stay where they are
_ALIGN = 64  # each tensor starts on a cache line


@functools.cache
def _malloc_trim():  # noqa: ANN202
    """glibc's malloc_trim, which hands freed heap pages back to the system (None: not glibc)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def available() -> str | None:
    """None where weights can be put on transparent huge pages here, else why not."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV}=0"
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return "this system has no transparent huge pages (madvise)"
    if _malloc_trim() is None:  # the old copies' memory would stay resident beside the new ones
        return "this C library cannot hand freed memory back (no malloc_trim)"
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "this system has no transparent huge pages"
    if "[never]" in mode:
        return "transparent huge pages are switched off (never)"
    return None


def _mapping(nbytes: int) -> Tensor | None:
    """`nbytes` of uninitialised memory [nbytes] (uint8) in an anonymous mapping advised for huge
    pages, starting on a 2 MiB boundary (None where the system refuses the mapping)."""
    try:
        arena = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        arena.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError):
        return None
    raw = torch.frombuffer(arena, dtype=torch.uint8)  # the tensor keeps `arena` alive
    start = (-raw.data_ptr()) % HUGE
    return raw[start : start + nbytes]


def empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor | None:
    """An uninitialised CPU tensor on transparent huge pages (None where available() says no)."""
    if available() is not None:
        return None
    raw = _mapping(torch.Size(shape).numel() * torch.empty(0, dtype=dtype).element_size())
    return None if raw is None else raw.view(dtype).view(shape)


def _movable(t: Tensor) -> bool:
    return (t.device.type == "cpu" and t.layout == torch.strided and not t.is_mkldnn and t.is_contiguous()
            and t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
            and t.numel() * t.element_size() >= MIN_BYTES)


def move_weights(model: nn.Module) -> int:
    """Copy `model`'s large parameters and buffers into one huge-page mapping (a tensor shared
    by several modules, such as a head tied to the embedding, stays shared); returns the bytes
    moved, 0 where nothing could be (see available())."""
    if available() is not None:
        return 0
    slots: list[tuple[nn.Module, str, bool]] = []  # (module, name, is a parameter)
    offsets: dict[int, int] = {}  # storage address -> offset in the mapping, in the order first met
    size = 0
    for module in model.modules():
        for store, is_param in ((module._parameters, True), (module._buffers, False)):
            for name, t in store.items():
                if t is not None and _movable(t):
                    slots.append((module, name, is_param))
                    if t.data_ptr() not in offsets:  # no reference kept: each old tensor is freed once replaced
                        offsets[t.data_ptr()] = size
                        size += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    if not offsets:
        return 0
    raw = _mapping(size)
    if raw is None:
        return 0
    with torch.no_grad():
        _replace(slots, raw, offsets)
    return size


def _replace(slots: list[tuple[nn.Module, str, bool]], raw: Tensor, offsets: dict[int, int]) -> None:
    """Each slot's tensor copied to its offset in `raw`, once per storage; a parameter shared by
    several modules (a tied head) becomes one new Parameter shared the same way."""
    trim = _malloc_trim()
    moved: dict[int, Tensor] = {}  # old storage address -> its new tensor (a Parameter for parameters)
    for module, name, is_param in slots:
        store = module._parameters if is_param else module._buffers
        old = store[name]
        ptr = old.data_ptr()
        if ptr not in moved:
            at, nbytes = offsets[ptr], old.numel() * old.element_size()
            new = raw[at : at + nbytes].view(old.dtype).view(old.shape)
            new.copy_(old)
            moved[ptr] = nn.Parameter(new, requires_grad=False) if is_param else new
        store[name] = moved[ptr]
        del old
        trim(0)  # the old copy, freed just now, leaves the process: memory never holds both copies
