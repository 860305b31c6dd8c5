"""A LLaMA-style decoder in plain PyTorch, in the manner of gpt-fast's model file.

Numerics follow transformers' modeling_llama.py (RMSNorm in float32, rotate-half rotary with
cos/sin cast to the activation dtype, softmax attention through F.scaled_dot_product_attention),
so the same weights give the same logits. Three things differ for speed: q/k/v are one matrix
(`wqkv`) and gate/up are one matrix (`w13`), which halves the number of matrix passes per layer;
the output head is applied by the caller, only where logits are needed; and on CPU the matrix
products go through oneDNN (see `Linear`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import HarnessError
from harness.models.scratch.config import ModelConfig


def _onednn_works() -> bool:
    """Whether torch's oneDNN linear kernel runs here and agrees with F.linear."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        x, w = torch.randn(3, 16, device="cpu"), torch.randn(5, 16, device="cpu")
        out = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return bool(torch.allclose(out, F.linear(x, w), atol=1e-4, rtol=1e-4))
    except (AttributeError, RuntimeError):
        return False


class Linear(nn.Linear):
    """nn.Linear whose CPU product runs in oneDNN when `onednn` is set.

    torch sends float32 F.linear to MKL, which on AMD CPUs takes a slow path: here oneDNN
    reads weights about twice as fast (batch-1 decode) and multiplies about twice as fast
    (scoring). bfloat16 weights are also re-laid out in oneDNN's blocked format, a further
    quarter faster. Results differ from F.linear's only by summation order (float32) or not at
    all (bfloat16).
    """

    onednn = False  # set per instance by Transformer.use_onednn

    def forward(self, x: Tensor) -> Tensor:
        if self.onednn and not torch.compiler.is_compiling():  # inductor picks its own kernels
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def pack(self) -> None:
        """Re-lay the (CPU, bfloat16) weight out for oneDNN; the dense copy is dropped."""
        packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach())
        self.weight = nn.Parameter(packed, requires_grad=False)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps, self.offset = eps, offset

    def forward(self, x: Tensor) -> Tensor:
        # transformers' LlamaRMSNorm, op for op: float32 statistics, cast back, then the weight
        # (F.rms_norm agrees to the bit here but is slower on CPU)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:  # Gemma: scale by (1 + w) in float32, then cast
            return (h * (self.offset + self.weight.float())).to(x.dtype)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(config: ModelConfig) -> Tensor:
    """Inverse frequencies of the rotary embedding, with linear or llama3 scaling."""
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    inv_freq = 1.0 / (config.rope_theta ** exponents)
    if config.rope_freq_factors is not None:  # GGUF's rope_freqs tensor (llama.cpp divides by it)
        return inv_freq / torch.tensor(config.rope_freq_factors, dtype=torch.float32, device="cpu")
    if config.rope_type == "linear":
        return inv_freq / config.rope_factor
    if config.rope_type == "llama3":  # transformers' _compute_llama3_parameters
        factor, low, high = config.rope_factor, config.rope_low_freq_factor, config.rope_high_freq_factor
        old_len = config.rope_original_max_len
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * torch.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


def rope_cos_sin(inv_freq: Tensor, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin [B, T, 1, head_dim] for positions [B, T]: computed in float32 as transformers
    does, then cast to the activation dtype."""
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1).unsqueeze(2)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [..., head_dim]; rotate-half layout (the first and second halves are the pairs)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache(nn.Module):
    """A static cache [batch, kv_heads, length, head_dim]; rows are written by slot index."""

    def __init__(self, batch: int, n_kv_heads: int, length: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k.index_copy_(2, slots, k)
        self.v.index_copy_(2, slots, v)
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        q_size, kv_size = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.wqkv = Linear(config.dim, q_size + 2 * kv_size, bias=config.attention_bias)
        self.wo = Linear(q_size, config.dim, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps, config.norm_weight_offset) if config.qk_norm else None
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps, config.norm_weight_offset) if config.qk_norm else None
        self.window = config.window(layer)
        self.scale = config.scale
        self.cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, slots: Tensor | None, mask: Tensor | None,
                kv_len: int | None) -> Tensor:
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.wqkv(x)
        v = qkv[..., (H + K) * D :].view(B, T, K, D).transpose(1, 2)
        if self.q_norm is None:  # one rotary pass over the q and k heads together
            qk = apply_rotary(qkv[..., : (H + K) * D].view(B, T, H + K, D), cos, sin).transpose(1, 2)
            q, k = qk[:, :H], qk[:, H:]
        else:
            q = apply_rotary(self.q_norm(qkv[..., : H * D].view(B, T, H, D)), cos, sin).transpose(1, 2)
            k = apply_rotary(self.k_norm(qkv[..., H * D : (H + K) * D].view(B, T, K, D)), cos, sin).transpose(1, 2)
        if self.cache is not None:
            if mask is None:
                raise ValueError("a forward pass through the KV cache needs a mask (see generate.py)")
            k, v = self.cache.update(slots, k, v)
            if kv_len is not None:  # eager: attend over the filled part of the cache only
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        if self.window is not None:
            mask = self._window_mask(mask, slots, T, k.shape[2], x.device)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, scale=self.scale, enable_gqa=H != K)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=H != K)
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))

    def _window_mask(self, mask: Tensor | None, slots: Tensor | None, T: int, S: int, device) -> Tensor:
        """Restrict a (causal, padding) mask to the last `window` keys of each query."""
        q_slots = slots if slots is not None else torch.arange(T, device=device)
        distance = q_slots[:, None] - torch.arange(S, device=device)[None, :]
        near = (distance >= 0) & (distance < self.window)
        return near if mask is None else mask & near


class FeedForward(nn.Module):
    """Gated MLP: w2(act(w1 x) * w3 x), with w1 and w3 stored as one matrix `w13`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w13 = Linear(config.dim, 2 * config.ffn_dim, bias=config.mlp_bias)
        self.w2 = Linear(config.ffn_dim, config.dim, bias=config.mlp_bias)
        self.act = F.silu if config.activation == "silu" else lambda x: F.gelu(x, approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(self.act(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        eps, offset = config.norm_eps, config.norm_weight_offset
        self.attention = Attention(config, layer)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, eps, offset)
        self.ffn_norm = RMSNorm(config.dim, eps, offset)
        self.post_attention_norm = RMSNorm(config.dim, eps, offset) if config.post_norms else None
        self.post_ffn_norm = RMSNorm(config.dim, eps, offset) if config.post_norms else None

    def forward(self, x, cos, sin, slots, mask, kv_len) -> Tensor:
        h = self.attention(self.attention_norm(x), cos, sin, slots, mask, kv_len)
        if self.post_attention_norm is not None:
            h = self.post_attention_norm(h)
        x = x + h
        h = self.feed_forward(self.ffn_norm(x))
        if self.post_ffn_norm is not None:
            h = self.post_ffn_norm(h)
        return x + h


class Transformer(nn.Module):
    """forward() returns the final normed hidden states; head() turns chosen ones into logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # from_pretrained skips the random init (on the meta device that would import torch._dynamo)
        self.tok_embeddings = nn.Embedding.from_pretrained(torch.empty(config.vocab_size, config.dim))
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps, config.norm_weight_offset)
        self.output = Linear(config.dim, config.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(config).to(self.norm.weight.device), persistent=False)

    def forward(self, tokens: Tensor, positions: Tensor, slots: Tensor | None = None,
                mask: Tensor | None = None, kv_len: int | None = None) -> Tensor:
        """tokens, positions: [B, T]. Without a cache, attention is causal over the T tokens (right
        padding needs no mask). With a cache, `slots` [T] are the cache slots written and `mask`
        [B, 1, T, S] says which cache slots each query sees."""
        x = self.tok_embeddings(tokens)
        if self.config.embedding_scale != 1.0:
            x = x * torch.tensor(self.config.embedding_scale, dtype=x.dtype)
        cos, sin = rope_cos_sin(self.inv_freq, positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, slots, mask, kv_len)
        return self.norm(x)

    def head(self, hidden: Tensor) -> Tensor:
        return self.output(hidden)

    # -- cache --------------------------------------------------------------------------------

    def setup_cache(self, batch: int, length: int) -> None:
        """Allocate a static KV cache for `batch` rows of `length` slots (replacing any other)."""
        weight = self.output.weight
        for layer in self.layers:
            attn = layer.attention
            attn.cache = KVCache(batch, attn.n_kv_heads, length, attn.head_dim, weight.dtype, weight.device)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.attention.cache = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_tensors(cls, config: ModelConfig, tensors: Iterable[tuple[str, Tensor]],
                     dtype: torch.dtype = torch.float32, device: str = "cpu", where: str = "model") -> Transformer:
        """Build the model from (name, tensor) pairs in this file's names (see weights.py); q/k/v and
        gate/up are fused as each layer's pieces arrive, so only one layer is held twice."""
        with torch.device("meta"):
            model = cls(config)
        params = dict(model.named_parameters())
        pending: dict[str, dict[str, Tensor]] = {}
        loaded: set[str] = set()
        fused = {"wq": ("wqkv", 0), "wk": ("wqkv", 1), "wv": ("wqkv", 2), "w1": ("w13", 0), "w3": ("w13", 1)}

        def put(name: str, t: Tensor) -> None:
            if name not in params:
                return
            if tuple(t.shape) != tuple(params[name].shape):
                raise HarnessError(f"{where}: tensor {name} has shape {tuple(t.shape)}, the config says "
                                   f"{tuple(params[name].shape)}; the file is inconsistent")
            module_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module_name), attr,
                    nn.Parameter(t.to(device=device, dtype=dtype).contiguous(), requires_grad=False))
            loaded.add(name)

        for name, t in tensors:
            module_name, _, attr = name.rpartition(".")
            prefix, _, leaf = module_name.rpartition(".")
            if leaf in fused:
                target, index = fused[leaf]
                key = f"{prefix}.{target}.{attr}"
                parts = pending.setdefault(key, {})
                parts[index] = t
                if len(parts) == (3 if target == "wqkv" else 2):
                    put(key, torch.cat([parts[i] for i in sorted(parts)], dim=0))
                    del pending[key]
            else:
                put(name, t)
        if config.tie_embeddings:
            model.output.weight = model.tok_embeddings.weight
            loaded.add("output.weight")
        missing = [n for n in params if n not in loaded]
        if missing:
            raise HarnessError(f"{where}: the weights lack {missing[0]} ({len(missing)} tensors missing); "
                               "the file is incomplete or not a supported decoder")
        model.inv_freq = rope_inv_freq(config).to(device)
        model.use_onednn()
        return model.eval()

    def use_onednn(self, enabled: bool = True) -> bool:
        """Route the CPU matrix products through oneDNN (when it works here); returns whether on.
        bfloat16 weights are packed for it, which cannot be undone (the head gets its own copy
        when tied to the embedding, which needs the dense matrix)."""
        weight = self.output.weight
        enabled = enabled and weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16) and _onednn_works()
        for module in self.modules():
            if isinstance(module, Linear):
                module.onednn = enabled or module.weight.is_mkldnn
                if enabled and module.weight.dtype == torch.bfloat16 and not module.weight.is_mkldnn:
                    module.pack()
        return enabled

    def n_params(self) -> int:
        """Parameters of the checkpoint (a tied head counts once, even when packed apart)."""
        n = sum(p.numel() for p in self.parameters())
        if self.config.tie_embeddings and self.output.weight is not self.tok_embeddings.weight:
            n -= self.output.weight.numel()
        return n
