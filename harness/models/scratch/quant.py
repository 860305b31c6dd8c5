"""Weight-only quantized matrix products for the scratch decoder, applied after loading.

`quantize_model(model, "int8" | "int4")` replaces every `packing.Linear` of a loaded float model
by a `QuantLinear` holding integer weights and their scales; the float weights are freed (the
embedding table stays float: a lookup reads one row per token, not the matrix).

    int8  symmetric, one scale per output channel: w = s[n] * q[n, k], q in [-127, 127]
    int4  asymmetric, one scale and offset per group of `group` inputs (32 default, 64, 128):
          w = s[n, g] * (q[n, k] - 8) + z[n, g], q in [0, 15]. The output head stays int8.
    int8-dynamic  int8 weights as `int8`, and each token's activations quantized on the fly
          to 7-bit unsigned integers (asymmetric, one scale per token, fbgemm's dynamic
          quantization with reduce_range): integer products, fast on AVX2 CPUs where the
          weight-only kernels are slow. Per token, so a score never depends on its batch.

With group 32 (the GGUF block size) int4 reproduces a Q4_0 or Q4_1 tensor exactly: each block's
minimum and maximum are its offset and offset + 15 x scale, so re-quantizing the dequantized
block finds the file's own integers and scales again (tests/test_scratch_quant.py checks this
on SmolLM2's Q4_1 weights).

Kernels (chosen per CPU by a probe, recorded as `model.extra.quant_kernels`):

    avx2-int8       cpu_quant_kernel.py's C kernel (AVX2 + FMA, compiled at first use): float
    avx2-int4       activations times the int8 / packed int4 weights in these buffers' layout,
                    one weight row at a time read once for all tokens; first choice on AVX2 CPUs
    aten-int8pack   torch's `_weight_int8pack_mm` (float activations, int8 weights)
    aten-int4pack   torch's `_weight_int4pack_mm_for_cpu` (float activations, packed int4)
    fbgemm-dynamic  `torch.ops.quantized.linear_dynamic` for one token at a time (decode); more
                    tokens at once (scoring, batches) quantize each token's activations in torch and
                    take the int8 weight-only kernel (or the dequantized product): the same numbers
    dequant         the integer weights widened to the activation dtype per call, then F.linear:
                    the same numbers, slower; what any CPU (or GPU) without the kernel gets.
                    Every scheme takes this path from DENSE_ROWS tokens per product on (scoring,
                    prefill), where one widening per call is cheaper than the vector kernels.

`HARNESS_QUANT_KERNELS` (or the backend's `quant_kernels=` option) forces `auto` (default),
`fast` (fail where the kernel does not run) or `fallback` (dequant everywhere, for testing).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import HarnessError
from harness.models.scratch import cpu_quant_kernel
from harness.models.scratch.packing import Linear

log = logging.getLogger(__name__)

QUANT_CHOICES = ("none", "int8", "int4", "int8-dynamic")
# From this many tokens per product on (scoring, prefill), widening the integers once per call and
# taking the float GEMM is faster than the matrix-vector kernels: the widening is paid once for all
# tokens. The numbers are the same (the dequantized weights are what the kernels compute with).
DENSE_ROWS = 16
GROUP_CHOICES = (32, 64, 128)
QUANT_KERNELS_ENV = "HARNESS_QUANT_KERNELS"
QUANT_KERNEL_CHOICES = ("auto", "fast", "fallback")


@dataclass(frozen=True)
class QuantPlan:
    """What quantize_model did: the scheme, the group size (int4) and the kernel per scheme."""

    quant: str
    group: int | None
    kernels: dict[str, str]

    @property
    def label(self) -> str:
        """One word per scheme, e.g. `int4=aten-int4pack,int8=aten-int8pack` (the cache key holds it)."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.kernels.items()))


def parse_quant(quant: str | None, group: int | str | None) -> tuple[str, int | None]:
    """The quant option and group size, checked (a user error names the option and the choices)."""
    choice = (quant or "none").strip().lower()
    if choice not in QUANT_CHOICES:
        raise HarnessError(f"quant={quant!r} is not a quantization; use one of {', '.join(QUANT_CHOICES)}")
    if choice != "int4":
        if group is not None:
            raise HarnessError("group= applies to quant=int4 only; drop it or set quant=int4")
        return choice, None
    try:
        size = int(group) if group is not None else 32
    except (TypeError, ValueError):
        size = -1
    if size not in GROUP_CHOICES:
        raise HarnessError(f"group={group!r} is not an int4 group size; use one of {', '.join(map(str, GROUP_CHOICES))}")
    return choice, size


def requested_quant_kernels(option: str | None = None) -> str:
    """The kernel request: the option if given, else $HARNESS_QUANT_KERNELS, else `auto`."""
    choice = (option or os.environ.get(QUANT_KERNELS_ENV) or "auto").strip().lower()
    if choice not in QUANT_KERNEL_CHOICES:
        where = "quant_kernels" if option else QUANT_KERNELS_ENV
        raise HarnessError(f"{where}={choice!r} is not a choice; use one of {', '.join(QUANT_KERNEL_CHOICES)}")
    return choice


# -- quantization (at load) -------------------------------------------------------------------


def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """w [N, K] float -> (q [N, K] int8, scales [N] float32), symmetric per output channel."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def quantize_int4(w: Tensor, group: int) -> tuple[Tensor, Tensor]:
    """w [N, K] float -> (q [N, K] uint8 in 0..15, scales_and_zeros [K / group, N, 2] float32):
    asymmetric min/max per group of `group` inputs, in the layout torch's int4 kernel takes."""
    n, k = w.shape
    if k % group:
        raise HarnessError(f"int4 group {group} does not divide a layer's {k} inputs; use a smaller group=")
    blocks = w.float().reshape(n, k // group, group)
    lo, hi = blocks.amin(dim=-1), blocks.amax(dim=-1)  # [N, G]
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((blocks - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
    zeros = lo + 8 * scales  # the kernel computes (q - 8) * scale + zero
    return q.reshape(n, k), torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()


def dequantize_int8(q: Tensor, scales: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    return (q.to(torch.float32) * scales[:, None]).to(dtype)


def pack_nibbles(q: Tensor) -> Tensor:
    """[N, K] values 0..15 -> [N, K / 2] bytes (element 2i in the low nibble, 2i + 1 in the high)."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed: Tensor) -> Tensor:
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(q: Tensor, scales_and_zeros: Tensor, group: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """q [N, K] values 0..15 (or [N, K / 2] packed nibbles) -> float [N, K]."""
    if q.shape[1] * 2 == scales_and_zeros.shape[0] * group:
        q = unpack_nibbles(q)
    n, k = q.shape
    s, z = scales_and_zeros[..., 0].T, scales_and_zeros[..., 1].T  # [N, G]
    blocks = (q.reshape(n, k // group, group).to(torch.float32) - 8) * s[..., None] + z[..., None]
    return blocks.reshape(n, k).to(dtype)


# -- kernel probes --------------------------------------------------------------------------


@functools.cache
def int8pack_works() -> bool:
    """Whether torch's int8 weight-only CPU kernel runs here and agrees with the dequantized product."""
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 64, generator=g), torch.randn(24, 64, generator=g)
        q, s = quantize_int8(w)
        out = torch.ops.aten._weight_int8pack_mm(x, q, s)
        return bool(torch.allclose(out, F.linear(x, dequantize_int8(q, s)), atol=1e-3, rtol=1e-3))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def int4pack_works(group: int) -> bool:
    """Whether torch's int4 CPU kernel (pack + product) runs here and agrees with the dequantized product."""
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 256, generator=g), torch.randn(32, 256, generator=g)
        q, sz = quantize_int4(w, group)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, sz)
        return bool(torch.allclose(out, F.linear(x, dequantize_int4(q, sz, group)), atol=1e-3, rtol=1e-3))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def avx2_works(scheme: str, group: int | None = None) -> bool:
    """Whether the compiled AVX2 kernel loads here and agrees with the dequantized product, on every
    row-block size (1 to 5 rows) and, for int8, inputs that are not a multiple of the vector width.
    Where it does not, one log line says why."""
    loaded = cpu_quant_kernel.load()
    if loaded.lib is None:
        log.warning("quant: the AVX2 %s kernel is not used (%s); torch's kernels instead", scheme, loaded.reason)
        return False
    g = torch.Generator().manual_seed(0)
    k = 108 if scheme == "int8" else 256
    w, bias = torch.randn(37, k, generator=g), torch.randn(37, generator=g)
    if scheme == "int8":
        q, s = quantize_int8(w)
        dense = dequantize_int8(q, s)
    else:
        q, s = quantize_int4(w, group or 32)
        dense, q, s = dequantize_int4(q, s, group or 32), pack_nibbles(q), cpu_quant_kernel.row_scales(s)
    for rows in (1, 2, 3, 4, 5):
        x = torch.randn(rows, k, generator=g)
        try:
            if scheme == "int8":
                out = cpu_quant_kernel.int8_matmul(x, q, s, bias)
            else:
                out = cpu_quant_kernel.int4_matmul(x, q, s, group or 32, bias)
        except (ValueError, OSError) as err:
            log.warning("quant: the AVX2 %s kernel is not used (%s); torch's kernels instead", scheme, err)
            return False
        if not torch.allclose(out, F.linear(x, dense, bias), atol=1e-4, rtol=1e-4):
            log.warning("quant: the AVX2 %s kernel disagrees with the dequantized product here; torch's kernels instead",
                        scheme)
            return False
    return True


def fake_quantize_tokens(x: Tensor) -> Tensor:
    """Each row of x [M, K] rounded as fbgemm's dynamic quantization with reduce_range rounds a
    tensor (asymmetric, 0..127, the range widened to hold 0), one scale per row; float32 out."""
    x = x.float()
    lo, hi = x.amin(dim=-1, keepdim=True).clamp(max=0), x.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 127).clamp(min=1e-12)
    zero = torch.round(-lo / scale).clamp(0, 127)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 127) - zero) * scale


def _prepack_int8(q: Tensor, scales: Tensor):
    """fbgemm's packed form of per-channel int8 weights (torch's quantized-tensor API)."""
    import warnings

    with warnings.catch_warnings():  # torch marks its quantized tensors as deprecated
        warnings.simplefilter("ignore")
        zeros = torch.zeros(q.shape[0], dtype=torch.long)
        qw = torch._make_per_channel_quantized_tensor(q, scales.double(), zeros, 0)
        return torch.ops.quantized.linear_prepack(qw, None)


@functools.cache
def fbgemm_dynamic_works() -> bool:
    """Whether fbgemm's dynamic int8 product runs here and matches its emulation in torch (with
    reduce_range=False AVX2 saturates and is wrong by 20%; this catches such a kernel)."""
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(1, 96, generator=g), torch.randn(40, 96, generator=g) * 0.05
        q, s = quantize_int8(w)
        out = torch.ops.quantized.linear_dynamic(x, _prepack_int8(q, s), True)
        ref = F.linear(fake_quantize_tokens(x), dequantize_int8(q, s))
        return bool(torch.allclose(out, ref, atol=1e-4, rtol=1e-4))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def choose_dynamic_kernel(device: str, dtype: torch.dtype, requested: str) -> str:
    """The kernel for int8-dynamic: fbgemm where it runs (CPU, float32), else the emulation."""
    if requested == "fallback":
        return "dequant"
    if device.startswith("cpu") and dtype == torch.float32 and fbgemm_dynamic_works():
        return "fbgemm-dynamic"
    if requested == "fast":
        raise HarnessError(f"quant_kernels=fast: fbgemm's dynamic int8 product does not run here "
                           f"({device}, {str(dtype).removeprefix('torch.')}); use quant_kernels=auto")
    return "dequant"


def choose_quant_kernel(scheme: str, group: int | None, device: str, dtype: torch.dtype, requested: str) -> str:
    """The kernel for one scheme (`int8` or `int4`) on `device` with activations of `dtype`."""
    if requested == "fallback":
        return "dequant"
    fast = device.startswith("cpu") and dtype == torch.float32
    if fast and avx2_works(scheme, group if scheme == "int4" else None):
        return f"avx2-{scheme}"
    works = fast and (int8pack_works() if scheme == "int8" else int4pack_works(group or 32))
    if works:
        return "aten-int8pack" if scheme == "int8" else "aten-int4pack"
    if requested == "fast":
        raise HarnessError(
            f"quant_kernels=fast: no {scheme} weight-only kernel (AVX2 or torch's) runs here "
            f"({device}, {str(dtype).removeprefix('torch.')} activations; they need a CPU and float32); "
            "use quant_kernels=auto"
        )
    return "dequant"


# -- the module -----------------------------------------------------------------------------


class QuantLinear(nn.Module):
    """A Linear with integer weights (see the module docstring); forward keeps x's dtype."""

    def __init__(self, linear: nn.Linear, scheme: str, group: int | None, kernel: str):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if kernel == "aten-int4pack" and self.out_features % 16:  # the packing's row blocks
            kernel = "dequant"
        self.scheme, self.group, self.kernel = scheme, group, kernel
        self.avx2 = kernel.startswith("avx2-")
        w = linear.weight.detach()
        if w.is_mkldnn:
            raise ValueError("quantize before packing: this weight is in oneDNN's blocked layout")
        if scheme == "int4":
            q, scales = quantize_int4(w, group)
        else:
            q, scales = quantize_int8(w)
        if scheme == "int4":
            q = pack_nibbles(q)
        self.register_buffer("qweight", q)  # int8 [N, K] or uint8 nibble pairs [N, K / 2]
        self.register_buffer("scales", scales)  # [N] or [K / group, N, 2]
        self.packed: Tensor | None = None
        # int8-dynamic with more than one token: the weight-only kernel on fake-quantized tokens
        self.many = "dequant"
        if kernel == "fbgemm-dynamic":
            self.packed = _prepack_int8(q, scales)
            self.many = "aten-int8pack" if int8pack_works() else "dequant"
        if kernel == "aten-int4pack":
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_nibbles(q).to(torch.int32), 1)
        if kernel == "avx2-int4":  # one copy of the scales, in the kernel's row-major order
            self.row_scales = cpu_quant_kernel.row_scales(scales)
            self.scales = self.row_scales.transpose(0, 1)  # the [K / group, N, 2] view of it
        if kernel.startswith("avx2-"):
            cpu_quant_kernel.check_weights(q, self.row_scales if scheme == "int4" else scales, scheme)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)

    def dense_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The float weight these integers stand for (for tests and the fallback)."""
        if self.scheme != "int4":
            return dequantize_int8(self.qweight, self.scales, dtype)
        return dequantize_int4(self.qweight, self.scales, self.group, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.scheme == "int8-dynamic":
            return self._forward_dynamic(x)
        shape = x.shape
        rows = x.numel() // shape[-1]
        if self.kernel == "dequant" or rows >= DENSE_ROWS:
            out = F.linear(x, self.dense_weight(x.dtype))
        elif self.avx2:  # decode: the C kernel, called with as little Python around it as possible
            flat = x.reshape(rows, shape[-1])
            if flat.dtype != torch.float32 or not flat.is_contiguous():
                flat = flat.float().contiguous()
            buffers = self._buffers  # not through nn.Module.__getattr__
            if self.scheme == "int8":
                out = cpu_quant_kernel.int8_matmul(flat, buffers["qweight"], buffers["scales"], self.bias)
            else:
                out = cpu_quant_kernel.int4_matmul(flat, buffers["qweight"], self.row_scales, self.group,
                                                   self.bias)
            out = out.view(*shape[:-1], self.out_features)
            return out if x.dtype == torch.float32 else out.to(x.dtype)
        else:
            flat = x.reshape(-1, shape[-1]).float().contiguous()
            if self.kernel == "aten-int8pack":
                out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)
            else:
                out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales)
            out = out.to(x.dtype).reshape(*shape[:-1], self.out_features)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def _forward_dynamic(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float().contiguous()
        if self.kernel == "fbgemm-dynamic" and flat.shape[0] == 1:  # one token: one scale, as ours
            out = torch.ops.quantized.linear_dynamic(flat, self.packed, True)
        elif self.kernel == "fbgemm-dynamic" and self.many == "aten-int8pack" and flat.shape[0] < DENSE_ROWS:
            out = torch.ops.aten._weight_int8pack_mm(fake_quantize_tokens(flat), self.qweight, self.scales)
        else:
            out = F.linear(fake_quantize_tokens(flat), self.dense_weight())
        out = out.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        group = f", group={self.group}" if self.group else ""
        return f"{self.in_features}, {self.out_features}, {self.scheme}{group}, kernel={self.kernel}"


def quantize_model(model: nn.Module, quant: str, group: int | None = None, *, device: str = "cpu",
                   dtype: torch.dtype = torch.float32, requested: str = "auto") -> QuantPlan | None:
    """Replace every packing.Linear of a loaded model (before apply_kernels) with a QuantLinear;
    int4 keeps the output head in int8. Returns what was done, or None for quant=none."""
    if quant == "none":
        return None
    kernels: dict[str, str] = {}

    def kernel_for(scheme: str) -> str:
        if scheme not in kernels and scheme == "int8-dynamic":
            kernels[scheme] = choose_dynamic_kernel(device, dtype, requested)
        if scheme not in kernels:
            kernels[scheme] = choose_quant_kernel(scheme, group, device, dtype, requested)
        return kernels[scheme]

    head = getattr(model, "output", None)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Linear):
                continue
            scheme = "int8" if quant == "int8" or (child is head and quant == "int4") else quant
            size = group if scheme == "int4" else None
            setattr(parent, name, QuantLinear(child, scheme, size, kernel_for(scheme)).to(device))
    return QuantPlan(quant, group, kernels)
