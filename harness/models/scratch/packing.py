"""CPU kernels for the scratch decoder's matrix products, chosen per machine after loading.

torch sends float32 `F.linear` to MKL, which on AMD CPUs takes a slow path; oneDNN's
`_linear_pointwise` reads weights about twice as fast there. For bfloat16, oneDNN can also re-lay
the weights out in its blocked format (`_reorder_linear_weight`), but only on CPUs with
AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; elsewhere (AVX2-only CPUs, common in clouds and laptops)
that call raises. So the choice is made here, from the CPU's features and a probe:

    onednn-bf16-packed  bfloat16 weights packed for oneDNN (AVX-512 or AVX-NE-CONVERT CPUs)
    onednn-bf16-fp32    bfloat16 weights widened to float32 once (exactly), float32 oneDNN products,
                        outputs rounded back to bfloat16: the bfloat16 model's numbers at float32 speed
    onednn-fp32         float32 weights through oneDNN
    aten                plain `F.linear` (a GPU, float16, or `plain` asked for)

`HARNESS_CPU_KERNELS` (or the backend's `kernels=` option) forces a choice: `auto` (default),
`onednn` (fail if the packed path is impossible here), `fallback` (the path an AVX2-only CPU gets,
on any CPU) or `plain` (no oneDNN at all).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import HarnessError

KERNELS_ENV = "HARNESS_CPU_KERNELS"
KERNEL_CHOICES = ("auto", "onednn", "fallback", "plain")
# oneDNN's bfloat16 reorder needs one of these flag sets (its own error message says which)
_BF16_FLAG_SETS = ({"avx512bw", "avx512vl", "avx512dq"}, {"avx_ne_convert"})


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU offers the kernels: torch's dispatch level and the /proc/cpuinfo flags."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", ...
    flags: frozenset[str]

    @property
    def bf16_packing(self) -> bool:
        """Whether oneDNN can pack bfloat16 weights here (by the flags; the probe confirms)."""
        return any(need <= self.flags for need in _BF16_FLAG_SETS)


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU features (read once)."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.partition(":")[2].split())
                    break
    except OSError:  # not Linux: trust torch's dispatch level alone
        if "AVX512" in capability:
            flags.update({"avx512bw", "avx512vl", "avx512dq"})
    return CpuFeatures(capability, frozenset(flags))


@functools.cache
def onednn_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's linear kernel runs here and agrees with F.linear, for float32 weights or
    for packed bfloat16 ones."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        x, w = torch.randn(3, 64), torch.randn(8, 64)
        if dtype == torch.bfloat16:
            x, w = x.bfloat16(), w.bfloat16()
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            return bool(torch.allclose(out.float(), F.linear(x.float(), w.float()), atol=0.1, rtol=0.02))
        out = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return bool(torch.allclose(out, F.linear(x, w), atol=1e-4, rtol=1e-4))
    except (AttributeError, RuntimeError):
        return False


def requested_kernels(option: str | None = None) -> str:
    """The kernel choice: the option if given, else $HARNESS_CPU_KERNELS, else `auto`."""
    choice = (option or os.environ.get(KERNELS_ENV) or "auto").strip().lower()
    if choice not in KERNEL_CHOICES:
        where = "kernels" if option else KERNELS_ENV
        raise HarnessError(f"{where}={choice!r} is not a kernel choice; use one of {', '.join(KERNEL_CHOICES)}")
    return choice


def choose_kernels(device: str, dtype: torch.dtype, requested: str = "auto") -> str:
    """The kernel path for weights of `dtype` on `device` (see the module docstring)."""
    if not device.startswith("cpu") or requested == "plain" or dtype not in (torch.float32, torch.bfloat16):
        return "aten"
    if dtype == torch.float32:
        return "onednn-fp32" if onednn_works(torch.float32) else "aten"
    if requested == "fallback":
        return "onednn-bf16-fp32" if onednn_works(torch.float32) else "aten"
    packable = cpu_features().bf16_packing and onednn_works(torch.bfloat16)
    if requested == "onednn" and not packable:
        feats = cpu_features()
        raise HarnessError(
            f"kernels=onednn: this CPU ({feats.capability}) cannot pack bfloat16 weights for oneDNN "
            "(it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT); use kernels=auto"
        )
    if packable:
        return "onednn-bf16-packed"
    return "onednn-bf16-fp32" if onednn_works(torch.float32) else "aten"


class Linear(nn.Linear):
    """nn.Linear whose CPU product runs in the kernel `apply_kernels` chose for it."""

    kernel = "aten"  # set per instance by apply_kernels

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "aten" or torch.compiler.is_compiling():  # inductor picks its own kernels
            return F.linear(x, self.weight, self.bias)
        if self.kernel == "onednn-bf16-fp32":
            out = torch.ops.mkldnn._linear_pointwise(x.float(), self.weight, self.bias, "none", [], "")
            return out.to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def apply_kernels(model: nn.Module, kernels: str) -> str:
    """Set every Linear of a loaded model to `kernels` (from choose_kernels), re-laying out its
    weights as that path needs; returns `kernels`. A packed or widened head tied to the embedding
    gets its own copy (the embedding keeps the dense bfloat16 matrix); on the other paths it stays
    shared."""
    for module in model.modules():
        if not isinstance(module, Linear):
            continue
        module.kernel = kernels
        weight = module.weight.detach()
        if kernels == "onednn-bf16-packed" and not weight.is_mkldnn:
            module.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(weight), requires_grad=False)
        elif kernels == "onednn-bf16-fp32" and weight.dtype == torch.bfloat16:
            # bfloat16 -> float32 is exact: the numbers stay the bfloat16 model's
            module.weight = nn.Parameter(weight.float(), requires_grad=False)
            if module.bias is not None:
                module.bias = nn.Parameter(module.bias.detach().float(), requires_grad=False)
    return kernels
