"""The AVX2 weight-only matrix-vector kernels (kernels/quant_gemv.c), compiled at first use.

torch's int8 and int4 weight-only CPU kernels are vectorized for AVX-512 only; on AVX2 CPUs they
are slower than the float32 product they replace. This module compiles a small C file with the
system compiler (`-O3 -mavx2 -mfma -fopenmp`), keeps the shared library in a per-user cache
keyed by the source's sha256, the compiler's version and the flags, and calls it through ctypes
with the tensors' data pointers. No Python package is needed, only a C compiler.

    $HARNESS_CC            the compiler (else $CC, else cc or gcc on the PATH)
    $HARNESS_KERNEL_CACHE  where the compiled libraries go (else <harness cache dir>/kernels; where
                           that cannot be written, a temporary folder for this process)

`load()` answers the library or, where it cannot be had (not an AVX2 + FMA CPU, no compiler, the
compile failed), why not; quant.py then keeps the kernels it had before.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("kernels") / "quant_gemv.c"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
CC_ENV = "HARNESS_CC"
CACHE_ENV = "HARNESS_KERNEL_CACHE"
ABI = 1  # harness_qgemv_abi() of the source this loader was written for
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


@dataclass(frozen=True)
class Loaded:
    """The compiled library (None where it could not be had) and, then, why not."""

    lib: ctypes.CDLL | None
    reason: str = ""


def cpu_has_avx2_fma() -> bool:
    """Whether this CPU runs AVX2 and FMA instructions (/proc/cpuinfo, else torch's dispatch level,
    whose AVX2 level implies FMA)."""
    from harness.models.scratch.packing import cpu_features

    feats = cpu_features()
    if feats.flags:
        return {"avx2", "fma"} <= feats.flags
    return feats.capability.startswith(("AVX2", "AVX512"))


def compiler() -> str | None:
    """The C compiler to use: $HARNESS_CC, else $CC, else cc or gcc on the PATH (None: none found)."""
    for name in (os.environ.get(CC_ENV), os.environ.get("CC")):
        if name:
            return shutil.which(name)  # a named compiler that is missing is not replaced by another
    return shutil.which("cc") or shutil.which("gcc")


def kernel_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from harness.cache import cache_dir

    return cache_dir() / "kernels"


def _compile(cc: str, path: Path = SOURCE) -> Path:
    """The shared library for a source, compiler and flags: from the cache, else compiled into it
    (a temporary name, then a rename, so processes compiling at once never see half a file)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60, check=True)
    source = path.read_bytes()
    key = hashlib.sha256(b"\0".join([source, version.stdout.encode(), " ".join(FLAGS).encode()])).hexdigest()
    folder = kernel_cache_dir()
    target = folder / f"{path.stem}-{key[:24]}.so"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".so", dir=folder)
    except OSError:  # a read-only cache: compile for this process only
        folder = Path(tempfile.mkdtemp(prefix="harness-kernels-"))
        target = folder / target.name
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, str(path), "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
            raise RuntimeError(f"{Path(cc).name} failed: {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_library(path: Path, abi_symbol: str, abi: int) -> Loaded:
    """A kernel source compiled for this machine (`abi_symbol()` must answer `abi`), or why it
    cannot be had here. Callers keep the answer (each source's loader is cached)."""
    if not cpu_has_avx2_fma():
        return Loaded(None, "this CPU has no AVX2 + FMA")
    if not path.is_file():
        return Loaded(None, f"{path.name} is missing from the installation")
    cc = compiler()
    if cc is None:
        named = os.environ.get(CC_ENV) or os.environ.get("CC")
        return Loaded(None, f"no C compiler ({named!r} not found)" if named else "no C compiler (cc, gcc) on the PATH")
    try:
        lib = ctypes.CDLL(str(_compile(cc, path)))
        if getattr(lib, abi_symbol)() != abi:
            return Loaded(None, "the compiled library does not match this loader")
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as err:
        return Loaded(None, f"compiling {path.name} failed ({err})")
    return Loaded(lib)


@functools.cache
def load() -> Loaded:
    """The compiled quantized kernels, or why they cannot be had here (read once per process)."""
    loaded = load_library(SOURCE, "harness_qgemv_abi", ABI)
    lib = loaded.lib
    if lib is None:
        return loaded
    lib.harness_gemv_int8.argtypes = [_P, _I64, _I64, _P, _P, _P, _I64, _P, _INT]
    lib.harness_gemv_int8.restype = None
    lib.harness_gemv_int4.argtypes = [_P, _I64, _I64, _P, _P, _I64, _P, _I64, _P, _INT]
    lib.harness_gemv_int4.restype = ctypes.c_int
    return Loaded(lib)


def _check(x: Tensor, n: int, bias: Tensor | None) -> None:
    """What the C code assumes of the activations and bias (a wrong pointer would crash it)."""
    if x.dtype != torch.float32 or x.dim() != 2 or not x.is_contiguous() or not x.is_cpu:
        raise ValueError("the AVX2 kernels take contiguous float32 [M, K] CPU activations")
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous() or bias.numel() != n):
        raise ValueError(f"the AVX2 kernels take a contiguous float32 bias of {n} values")


def check_weights(qweight: Tensor, scales: Tensor, scheme: str) -> None:
    """The weight layouts the kernels read (quant.py's buffers, int4's scales in row_scales' order)."""
    want = torch.int8 if scheme == "int8" else torch.uint8
    n = qweight.shape[0]
    if (qweight.dtype != want or scales.dtype != torch.float32 or not qweight.is_contiguous()
            or not scales.is_contiguous() or scales.shape[0] != n or not qweight.is_cpu or not scales.is_cpu):
        raise ValueError(f"the AVX2 {scheme} kernel takes contiguous {want} weights and float32 scales, one row per channel")


def int8_matmul(x: Tensor, qweight: Tensor, scales: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [M, K] float32 times the int8 weights [N, K] with one scale per output channel."""
    (m, k), n = x.shape, qweight.shape[0]
    _check(x, n, bias)
    check_weights(qweight, scales, "int8")
    if qweight.shape[1] != k or scales.dim() != 1:
        raise ValueError(f"activations have {k} features, the weights {qweight.shape[1]}")
    out = torch.empty(m, n, dtype=torch.float32)
    load().lib.harness_gemv_int8(x.data_ptr(), m, k, qweight.data_ptr(), scales.data_ptr(),
                                 None if bias is None else bias.data_ptr(), n, out.data_ptr(), torch.get_num_threads())
    return out


def row_scales(scales_and_zeros: Tensor) -> Tensor:
    """[K / group, N, 2] (torch's int4 layout) -> [N, K / group, 2] contiguous: the kernel reads
    each output channel's scales beside its weights, not one cache line per group."""
    return scales_and_zeros.transpose(0, 1).contiguous()


def int4_matmul(x: Tensor, qweight: Tensor, scales: Tensor, group: int, bias: Tensor | None = None) -> Tensor:
    """x [M, K] float32 times the packed int4 weights [N, K / 2] with (scale, zero) per group in
    row_scales' layout [N, K / group, 2]."""
    (m, k), n = x.shape, qweight.shape[0]
    _check(x, n, bias)
    check_weights(qweight, scales, "int4")
    if qweight.shape[1] * 2 != k or scales.shape != (n, k // group, 2):
        raise ValueError(f"activations have {k} features; the int4 weights and scales do not match them")
    out = torch.empty(m, n, dtype=torch.float32)
    rc = load().lib.harness_gemv_int4(x.data_ptr(), m, k, qweight.data_ptr(), scales.data_ptr(), group,
                                      None if bias is None else bias.data_ptr(), n, out.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"the AVX2 int4 kernel takes groups of a multiple of 16 dividing K (K {k}, group {group})")
    return out
