"""Decode steps of the scratch decoder in a few C calls per layer (kernels/decode_step.c).

A decode step feeds one token per cache row. Its matrix products read every weight once for a
handful of rows, so memory bandwidth bounds it; run op by op through torch, each of a layer's
~40 small operations (norm statistics, rotary halves, cache writes, attention, activation,
residual adds) also pays a dispatch and an allocation, which at batch 1 costs about as much as the
products. Here a layer is eight steps: norm, q/k/v product, rotary + cache write + attention,
output product added into the residual, norm, gate/up product, gated activation, down product
added into the residual; with float32 weights the whole stack is one C call and one OpenMP
parallel region (threads meet at a barrier between steps), with quantized ones each step is a
call. The head is one more product. Float32 weights go through the file's own
AVX2 matrix-vector kernel (oneDNN's reaches about half the machine's read bandwidth on these
shapes); quantized ones (quant.QuantLinear) through their own kernels.

The same arithmetic as model.py in float32, summed in another order: logits agree with the torch
path to float32 rounding (tests/test_fused_decode.py: 1e-4 relative, greedy tokens equal).

Taken only where it fits: a CPU with AVX2 + FMA and a C compiler (cpu_quant_kernel.load_library),
float32 activations, and a plain LLaMA-family layer (RMSNorm without offset, SwiGLU, no q/k
norms, post-norms or sliding windows; biases are fine). `unsupported()` says why not; the torch
path runs instead, with the same numbers to rounding.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch import Tensor

from harness.models.scratch import cpu_quant_kernel
from harness.models.scratch.cpu_quant_kernel import Loaded
from harness.models.scratch.packing import Linear

SOURCE = Path(__file__).with_name("kernels") / "decode_step.c"
ABI = 2
MAX_ROWS = 16  # above this many rows a blocked matrix product (oneDNN) reuses weights better
_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


class _Heads(ctypes.Structure):
    _fields_ = [("B", _I64), ("H", _I64), ("KH", _I64), ("D", _I64), ("S", _I64), ("positions", _P), ("rows", _P),
                ("cos", _P), ("sin", _P), ("scale", _F)]


class _Layer(ctypes.Structure):
    _fields_ = [(name, _P) for name in ("attn_norm", "ffn_norm", "wqkv", "bqkv", "wo", "bo", "w13", "b13", "w2", "b2")]


class _Step(ctypes.Structure):
    _fields_ = [("heads", _Heads), ("dim", _I64), ("F", _I64), ("vocab", _I64), ("eps", _F)] + [
        (name, _P) for name in ("x", "h", "qkv", "att", "gu", "act", "scores", "norm", "head", "out", "logits")]


@functools.cache
def load() -> Loaded:
    """The compiled decode kernels, or why they cannot be had here (read once per process)."""
    loaded = cpu_quant_kernel.load_library(SOURCE, "harness_decode_abi", ABI)
    lib = loaded.lib
    if lib is None:
        return loaded
    lib.harness_gemv_f32.argtypes = [_P, _I64, _I64, _P, _P, _I64, _P, _INT, _INT]
    lib.harness_gemv_f32.restype = None
    lib.harness_rmsnorm.argtypes = [_P, _I64, _I64, _P, _F, _P]
    lib.harness_rmsnorm.restype = None
    lib.harness_silu_mul.argtypes = [_P, _I64, _I64, _P, _INT]
    lib.harness_silu_mul.restype = None
    lib.harness_rope_attend.argtypes = [_P, _I64, _I64, _I64, _I64, _P, _P, _P, _P, _P, _P, _I64, _F, _P, _P, _INT]
    lib.harness_rope_attend.restype = _INT
    lib.harness_decode_layers.argtypes = [ctypes.POINTER(_Step), ctypes.POINTER(_Layer), _P, _P, _I64, _INT]
    lib.harness_decode_layers.restype = _INT
    return loaded


def _dense(module: torch.nn.Module) -> bool:
    """Whether the file's float32 kernel can read this Linear's weights as they are."""
    w = module.weight
    return (isinstance(module, Linear) and not w.is_mkldnn and w.dtype == torch.float32 and w.dim() == 2
            and w.is_contiguous() and (module.bias is None or module.bias.dtype == torch.float32))


def unsupported(model: torch.nn.Module) -> str | None:
    """Why the fused decode step cannot run `model` (a model.Transformer), or None where it can."""
    c = model.config
    if model.inv_freq.device.type != "cpu":
        return "the model is not on the CPU"
    if model.tok_embeddings.weight.dtype != torch.float32:
        return f"activations are {model.tok_embeddings.weight.dtype}, not float32"
    if c.qk_norm or c.post_norms or c.activation != "silu" or c.norm_weight_offset:
        return f"the {c.architecture} layer (q/k norms, post-norms, GeGLU or offset norms) has no fused step"
    if any(layer.attention.window is not None for layer in model.layers):
        return "sliding-window layers have no fused step"
    if c.head_dim % 2 or c.n_heads % c.n_kv_heads:
        return "the head layout has no fused step"
    for module in model.modules():
        if isinstance(module, Linear) and not _dense(module):
            return "a matrix is stored in a layout the fused step cannot read"
    loaded = load()
    return None if loaded.lib is not None else loaded.reason


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class FusedDecode:
    """Runs Transformer.forward_rows for one token per row, and the head over a few rows.

    With float32 weights throughout, every layer runs in one C call (`harness_decode_layers`);
    with quantized ones (quant.QuantLinear), a layer is eight calls, its products through the
    QuantLinear's own kernels."""

    max_rows = MAX_ROWS  # the most rows a decode step or a head call sends through it

    def __init__(self, model: torch.nn.Module):
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"no fused decode step: {reason}")
        self.lib = load().lib
        self.model = model
        c = model.config
        self.dim, self.H, self.K, self.D, self.F = c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim
        self.eps = float(c.norm_eps)
        self.scale = float(model.layers[0].attention.scale)
        # one call for the whole stack where every layer product is a dense float32 Linear
        self.whole = all(isinstance(m, Linear) for layer in model.layers
                         for m in (layer.attention.wqkv, layer.attention.wo, layer.feed_forward.w13, layer.feed_forward.w2))
        self._buffers: dict[tuple[int, int], tuple[Tensor, ...]] = {}
        self._layers: tuple[tuple[int, ...], ctypes.Array] | None = None  # by the matrices' addresses
        self._attentions = [layer.attention for layer in model.layers]
        self._matrices = [m for layer in model.layers for m in (layer.attention.wqkv, layer.attention.wo,
                                                                  layer.feed_forward.w13, layer.feed_forward.w2)]

    def _scratch(self, B: int, S: int) -> tuple[Tensor, ...]:
        """Per batch size and cache length: normed input, q/k/v, attention output, gate/up,
        activation [B, ...], and attention scores [threads, S]."""
        threads = torch.get_num_threads()
        key = (B, S, threads)
        if key not in self._buffers:
            width = (self.H + 2 * self.K) * self.D
            self._buffers = {key: tuple(torch.empty(B, n) for n in (self.dim, width, self.H * self.D, 2 * self.F, self.F))
                             + (torch.empty(threads, S),)}
        return self._buffers[key]

    def _layer_array(self) -> ctypes.Array:
        """The layers' weight pointers for harness_decode_layers, rebuilt whenever the weights
        move (the move to huge pages before the first generation): a stale pointer would read
        freed memory. Keyed by every matrix's address (read through the modules' own
        dictionaries: nn.Module attribute lookup would cost more than the key saves)."""
        key = tuple(lin._parameters["weight"].data_ptr() for lin in self._matrices)
        if self._layers is None or self._layers[0] != key:
            array = (_Layer * len(self.model.layers))()
            for slot, layer in zip(array, self.model.layers):
                attn, ffn = layer.attention, layer.feed_forward
                slot.attn_norm, slot.ffn_norm = layer.attention_norm.weight.data_ptr(), layer.ffn_norm.weight.data_ptr()
                for name, lin in (("wqkv", attn.wqkv), ("wo", attn.wo), ("w13", ffn.w13), ("w2", ffn.w2)):
                    setattr(slot, name, lin.weight.data_ptr())
                    setattr(slot, "b" + name[1:], _ptr(lin.bias))
            self._layers = (key, array)
        return self._layers[1]

    def _cache_pointers(self) -> tuple[Tensor, Tensor]:
        """Every layer's key and value cache addresses [n_layers] (int64), read on every call:
        each generation allocates new caches."""
        caches = [attn._modules["cache"]._buffers for attn in self._attentions]
        return (torch.tensor([c["k"].data_ptr() for c in caches], dtype=torch.int64),
                torch.tensor([c["v"].data_ptr() for c in caches], dtype=torch.int64))

    def _linear(self, module: torch.nn.Module, x: Tensor, out: Tensor, accumulate: bool, threads: int) -> None:
        """out (+)= module(x) for x [M, K], out [M, N], both contiguous float32."""
        if isinstance(module, Linear):  # unsupported() checked it is dense float32
            self.lib.harness_gemv_f32(x.data_ptr(), x.shape[0], x.shape[1], module.weight.data_ptr(),
                                      _ptr(module.bias), out.shape[1], out.data_ptr(), int(accumulate), threads)
        elif accumulate:  # quantized (quant.QuantLinear): its own kernel
            out.add_(module(x))
        else:
            out.copy_(module(x))

    @torch.inference_mode()
    def forward_rows(self, tokens: Tensor, positions: Tensor, rows: Tensor | None = None) -> Tensor:
        """tokens, positions [B, 1] -> normed hidden states [B, 1, dim] (Transformer.forward_rows)."""
        return self._run(tokens, positions, rows, logits=False)[:, None]

    @torch.inference_mode()
    def decode_logits(self, tokens: Tensor, positions: Tensor, rows: Tensor | None = None) -> Tensor:
        """tokens, positions [B, 1] -> next-token logits [B, vocab] (Transformer.decode_logits):
        with float32 weights the head runs in the same call as the layers."""
        if not self.whole or not isinstance(self.model.output, Linear):
            return self.head(self._run(tokens, positions, rows, logits=False))
        return self._run(tokens, positions, rows, logits=True)

    def _run(self, tokens: Tensor, positions: Tensor, rows: Tensor | None, logits: bool) -> Tensor:
        model = self.model
        B = tokens.shape[0]
        x = model.tok_embeddings(tokens[:, 0]).float().contiguous()  # [B, dim]: a fresh tensor
        if model.config.embedding_scale != 1.0:
            x.mul_(model.config.embedding_scale)
        pos = positions[:, 0].to(torch.int64).contiguous()
        cache_rows = None if rows is None else rows.to(torch.int64).contiguous()
        S = model.layers[0].attention.cache.k.shape[2]
        if int(pos.min()) < 0 or int(pos.max()) >= min(S, model.rope_cos.shape[0]):
            raise ValueError(f"decode positions {pos.tolist()} fall outside the cache of {S} slots")
        buffers = self._scratch(B, S)
        heads = _Heads(B, self.H, self.K, self.D, S, pos.data_ptr(), _ptr(cache_rows), model.rope_cos.data_ptr(),
                       model.rope_sin.data_ptr(), self.scale)
        threads = torch.get_num_threads()
        out = torch.empty_like(x)
        if self.whole:
            head = model.output
            scores = torch.empty(B, head.out_features) if logits else None
            step = _Step(heads, self.dim, self.F, head.out_features, self.eps, x.data_ptr(),
                         *(t.data_ptr() for t in buffers), model.norm.weight.data_ptr(),
                         head.weight.data_ptr() if logits else None, out.data_ptr(), _ptr(scores))
            kcaches, vcaches = self._cache_pointers()
            if self.lib.harness_decode_layers(ctypes.byref(step), self._layer_array(), kcaches.data_ptr(),
                                              vcaches.data_ptr(), len(model.layers), threads):
                raise ValueError(f"decode positions {pos.tolist()} fall outside the cache of {S} slots")
            if logits:
                return scores
        else:
            if self._layer_by_layer(x, heads, buffers, threads):
                raise ValueError(f"decode positions {pos.tolist()} fall outside the cache of {S} slots")
            self.lib.harness_rmsnorm(x.data_ptr(), B, self.dim, model.norm.weight.data_ptr(), self.eps, out.data_ptr())
        return out

    def _layer_by_layer(self, x: Tensor, heads: _Heads, buffers: tuple[Tensor, ...], threads: int) -> int:
        """The layers as eight calls each, for weights the whole-stack call cannot read."""
        lib, B = self.lib, x.shape[0]
        h, qkv, attended, gate_up, act, scores = buffers
        for layer in self.model.layers:
            attn, ffn, cache = layer.attention, layer.feed_forward, layer.attention.cache
            lib.harness_rmsnorm(x.data_ptr(), B, self.dim, layer.attention_norm.weight.data_ptr(), self.eps, h.data_ptr())
            self._linear(attn.wqkv, h, qkv, False, threads)
            rc = lib.harness_rope_attend(qkv.data_ptr(), B, self.H, self.K, self.D, heads.positions, heads.rows,
                                         heads.cos, heads.sin, cache.k.data_ptr(), cache.v.data_ptr(), heads.S,
                                         self.scale, attended.data_ptr(), scores.data_ptr(), threads)
            if rc != 0:
                return rc
            self._linear(attn.wo, attended, x, True, threads)
            lib.harness_rmsnorm(x.data_ptr(), B, self.dim, layer.ffn_norm.weight.data_ptr(), self.eps, h.data_ptr())
            self._linear(ffn.w13, h, gate_up, False, threads)
            lib.harness_silu_mul(gate_up.data_ptr(), B, self.F, act.data_ptr(), threads)
            self._linear(ffn.w2, act, x, True, threads)
        return 0

    @torch.inference_mode()
    def head(self, hidden: Tensor) -> Tensor:
        """hidden [M, dim] -> logits [M, vocab] (Transformer.head) for a few rows."""
        x = hidden.float().contiguous()
        head = self.model.output
        out = torch.empty(x.shape[0], head.out_features)
        self._linear(head, x, out, False, torch.get_num_threads())
        return out


def attach(model: torch.nn.Module, enabled: bool = True) -> str | None:
    """Give `model` its fused decode step where it can run one; returns None when attached, else
    why not (the model then keeps its torch path)."""
    model.fused = None
    if not enabled:
        return "turned off"
    reason = unsupported(model)
    if reason is None:
        model.fused = FusedDecode(model)
    return reason
