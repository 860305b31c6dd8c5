"""A LLaMA-style decoder in plain PyTorch, in the manner of gpt-fast's model file.

Numerics follow transformers' modeling_llama.py (RMSNorm in float32, rotate-half rotary with
cos/sin cast to the activation dtype, softmax attention through F.scaled_dot_product_attention),
so the same weights give the same logits. Three things differ for speed: q/k/v are one matrix
(`wqkv`) and gate/up are one matrix (`w13`), which halves the number of matrix passes per layer;
the output head is applied by the caller, only where logits are needed; and on CPU the matrix
products go through the kernels packing.py picks for the machine (applied after loading).

The model owns its rotary tables and, with a KV cache, the causal and padding masks: callers pass
tokens and positions only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import HarnessError
from harness.models.scratch.config import ModelConfig
from harness.models.scratch.packing import Linear


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

    def update_rows(self, rows: Tensor | None, positions: Tensor, k: Tensor, v: Tensor,
                    kv_len: int | None) -> tuple[Tensor, Tensor]:
        """Continuous batching: k, v [b, K, T, D] of cache rows `rows` [b] (every row if None), each
        row at its own positions [b, T]; returns those rows' keys and values [b, K, S or kv_len, D]."""
        index = torch.arange(self.k.shape[0], device=k.device) if rows is None else rows
        self.k[index[:, None], :, positions] = k.transpose(1, 2)  # [b, T, K, D] by advanced indexing
        self.v[index[:, None], :, positions] = v.transpose(1, 2)
        keys, values = self.k, self.v
        if kv_len is not None:
            keys, values = keys[:, :, :kv_len], values[:, :, :kv_len]
        if rows is None:
            return keys, values
        return keys[rows], values[rows]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        q_size, kv_size = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.wqkv = Linear(config.dim, q_size + 2 * kv_size, bias=config.attention_bias)
        self.wo = Linear(q_size, config.dim, bias=config.attention_out_bias)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps, config.norm_weight_offset) if config.qk_norm else None
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps, config.norm_weight_offset) if config.qk_norm else None
        self.window = config.window(layer)
        self.scale = config.scale
        self.cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, slots: Tensor | None, mask: Tensor | None,
                kv_len: int | None, rows: Tensor | None = None) -> Tensor:
        """x [B, T, dim]; cos, sin [B, T, 1, D]; with a cache, `slots` [T] are the slots written,
        `mask` [B, 1, T, S] the keys each query sees and `kv_len` the filled slots (eager only).
        Continuous batching (Transformer.forward_rows) passes `slots` [B, T], each row's own
        positions, and `rows` [B], the cache rows of the batch (None: all of them)."""
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.wqkv(x)  # [B, T, (H + 2K) D]
        v = qkv[..., (H + K) * D :].view(B, T, K, D).transpose(1, 2)  # [B, K, T, D]
        if self.q_norm is None:  # one rotary pass over the q and k heads together
            qk = apply_rotary(qkv[..., : (H + K) * D].view(B, T, H + K, D), cos, sin).transpose(1, 2)  # [B, H+K, T, D]
            q, k = qk[:, :H], qk[:, H:]  # [B, H, T, D], [B, K, T, D]
        else:
            q = apply_rotary(self.q_norm(qkv[..., : H * D].view(B, T, H, D)), cos, sin).transpose(1, 2)
            k = apply_rotary(self.k_norm(qkv[..., H * D : (H + K) * D].view(B, T, K, D)), cos, sin).transpose(1, 2)
        if self.cache is not None:
            if mask is None:
                raise ValueError("a forward pass through the KV cache needs a mask (Transformer builds it)")
            if slots.dim() == 2:
                k, v = self.cache.update_rows(rows, slots, k, v, kv_len)  # [B, K, kv_len or S, D]
            else:
                k, v = self.cache.update(slots, k, v)  # [B, K, S, D]
            if kv_len is not None:  # eager: attend over the filled part of the cache only
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        if self.window is not None:
            mask = self._window_mask(mask, slots, T, k.shape[2], x.device)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, scale=self.scale, enable_gqa=H != K)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=H != K)
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))  # [B, H, T, D] -> [B, T, dim]

    def _window_mask(self, mask: Tensor | None, slots: Tensor | None, T: int, S: int, device) -> Tensor:
        """Restrict a (causal, padding) mask to the last `window` keys of each query."""
        q_slots = slots if slots is not None else torch.arange(T, device=device)
        distance = q_slots[..., None] - torch.arange(S, device=device)  # [T, S] (or [B, T, S])
        near = (distance >= 0) & (distance < self.window)
        if near.dim() == 3:  # per-row positions [B, T] (continuous batching): [B, 1, T, S]
            near = near[:, None]
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

    def forward(self, x, cos, sin, slots, mask, kv_len, rows=None) -> Tensor:
        h = self.attention(self.attention_norm(x), cos, sin, slots, mask, kv_len, rows)
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
        self.rope_cos: Tensor | None = None  # [P, D] float32 tables for positions 0..P-1
        self.rope_sin: Tensor | None = None
        self.cache_valid: Tensor | None = None  # [B, S]: slots holding a real (non-padding) token
        self.cache_pad: Tensor | None = None  # [B]: left padding of each row
        self.causal: Tensor | None = None  # [S, S]: slot i sees slots <= i
        self.fused = None  # fused_decode.FusedDecode, where fused_decode.attach gave it one
        self.before_decode = None  # run once before the first generation (the backend's weight move)

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens [B, T] -> normed hidden states [B, T, dim].

        Without a cache, `positions` [B, T] (or [T]) are the tokens' positions and attention is
        causal over the T tokens (right padding needs no mask). With a cache (setup_cache),
        `positions` [T] are the cache slots written, as gpt-fast's `input_pos`: row b's tokens sit
        at positions slot - pad[b], and each query sees the filled non-padding slots up to its own.
        """
        x = self.tok_embeddings(tokens)  # [B, T, dim]
        if self.config.embedding_scale != 1.0:
            x = x * torch.tensor(self.config.embedding_scale, dtype=x.dtype)
        if self.cache_valid is None:
            slots, mask, kv_len = None, None, None
            if not torch.compiler.is_compiling():
                self._ensure_rope(int(positions.max()) + 1)
        else:
            slots = positions  # [T]
            positions = (slots[None, :] - self.cache_pad[:, None]).clamp(min=0)  # [B, T]
            S = self.causal.shape[0]
            own = slots[:, None] == torch.arange(S, device=slots.device)[None, :]  # [T, S]
            # a padding query sees itself only, so no row of the softmax is all -inf
            mask = (self.causal[slots][None] & (self.cache_valid[:, None, :] | own[None]))[:, None]  # [B, 1, T, S]
            kv_len = None
            if not torch.compiler.is_compiling():  # eager: only the filled slots (compiled: all S)
                kv_len = int(slots[-1]) + 1
                mask = mask[..., :kv_len]
        if positions.dim() == 1:
            positions = positions[None]  # [1, T]: the same positions for every row
        cos = self.rope_cos[positions].to(x.dtype)[:, :, None]  # [B or 1, T, 1, D]
        sin = self.rope_sin[positions].to(x.dtype)[:, :, None]
        for layer in self.layers:
            x = layer(x, cos, sin, slots, mask, kv_len)
        return self.norm(x)

    def forward_rows(self, tokens: Tensor, positions: Tensor, rows: Tensor | None = None) -> Tensor:
        """Continuous batching over a cache from setup_cache (no padding): tokens [b, T] of cache
        rows `rows` [b] (all rows if None), each row at its own positions [b, T], which are also its
        cache slots; a query sees its row's slots up to its own position. -> hidden [b, T, dim].
        A row's slots past its position may hold another request's keys: the mask hides them."""
        if tokens.shape[1] == 1 and self._fused_takes(tokens.shape[0]):  # a decode step: one C call
            return self.fused.forward_rows(tokens, positions, rows)
        x = self.tok_embeddings(tokens)  # [b, T, dim]
        if self.config.embedding_scale != 1.0:
            x = x * torch.tensor(self.config.embedding_scale, dtype=x.dtype)
        S = self.causal.shape[0]
        mask = (torch.arange(S, device=tokens.device) <= positions[..., None])[:, None]  # [b, 1, T, S]
        kv_len = None
        if not torch.compiler.is_compiling():  # eager: only the slots in use (compiled: all S)
            kv_len = int(positions.max()) + 1
            mask = mask[..., :kv_len]
        cos = self.rope_cos[positions].to(x.dtype)[:, :, None]  # [b, T, 1, D]
        sin = self.rope_sin[positions].to(x.dtype)[:, :, None]
        for layer in self.layers:
            x = layer(x, cos, sin, positions, mask, kv_len, rows)
        return self.norm(x)

    def _fused_takes(self, rows: int) -> bool:
        """Whether the fused decode kernels run a call over `rows` rows (eager, few enough rows)."""
        return self.fused is not None and rows <= self.fused.max_rows and not torch.compiler.is_compiling()

    def ready_for_decode(self) -> None:
        """Run the before_decode hook, once (generate.py calls this before a generation)."""
        hook, self.before_decode = self.before_decode, None
        if hook is not None:
            hook()

    def decode_logits(self, tokens: Tensor, positions: Tensor, rows: Tensor | None = None) -> Tensor:
        """One decode step over a cache from setup_cache: tokens, positions [b, 1] -> the next
        token's logits [b, vocab] (float32), as head(forward_rows(...)[:, -1])."""
        if tokens.shape[1] == 1 and self._fused_takes(tokens.shape[0]):
            return self.fused.decode_logits(tokens, positions, rows).float()
        return self.head(self.forward_rows(tokens, positions, rows)[:, -1]).float()

    def head(self, hidden: Tensor) -> Tensor:
        """hidden [..., dim] -> logits [..., vocab]."""
        if hidden.dim() == 2 and self._fused_takes(hidden.shape[0]):
            return self.fused.head(hidden)
        return self.output(hidden)

    def _ensure_rope(self, n: int) -> None:
        """Rotary tables for positions 0..n-1 at least (grown in powers of two, never shrunk)."""
        if self.rope_cos is not None and self.rope_cos.shape[0] >= n:
            return
        size = 1 << max(10, (n - 1).bit_length())
        positions = torch.arange(size, device=self.inv_freq.device)[None]
        cos, sin = rope_cos_sin(self.inv_freq, positions, torch.float32)  # [1, P, 1, D]
        self.rope_cos, self.rope_sin = cos[0, :, 0], sin[0, :, 0]  # [P, D]

    # -- cache --------------------------------------------------------------------------------

    def setup_cache(self, batch: int, length: int, pad: Tensor | None = None) -> None:
        """Allocate a static KV cache for `batch` rows of `length` slots (replacing any other);
        row b's first pad[b] slots hold left padding (default none)."""
        weight = self.tok_embeddings.weight
        device = self.inv_freq.device
        for layer in self.layers:
            attn = layer.attention
            attn.cache = KVCache(batch, attn.n_kv_heads, length, attn.head_dim, weight.dtype, device)
        self._ensure_rope(length)
        slot_ids = torch.arange(length, device=device)
        self.cache_pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self.cache_valid = slot_ids[None, :] >= self.cache_pad[:, None]  # [B, S]
        self.causal = slot_ids[:, None] >= slot_ids[None, :]  # [S, S]

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.attention.cache = None
        self.cache_valid = self.cache_pad = self.causal = None

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

        unused: list[str] = []

        def put(name: str, t: Tensor) -> None:
            if name not in params:
                if not (name == "output.weight" and config.tie_embeddings):  # a stored copy of the tied head
                    unused.append(name)
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
        unused += sorted(pending)  # fused pieces that never completed
        if unused:
            shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
            raise HarnessError(f"{where}: {len(unused)} tensors have no place in the {config.architecture} "
                               f"decoder this config describes: {shown}; the config does not match the "
                               "weights, or the architecture is not supported")
        missing = [n for n in params if n not in loaded]
        if missing:
            raise HarnessError(f"{where}: the weights lack {missing[0]} ({len(missing)} tensors missing); "
                               "the file is incomplete or not a supported decoder")
        model.inv_freq = rope_inv_freq(config).to(device)
        model._ensure_rope(min(config.max_seq_len, 4096))
        return model.eval()

    def n_params(self) -> int:
        """Parameters of the checkpoint (a tied head counts once, even when packed apart)."""
        n = sum(p.numel() for p in self.parameters())
        if self.config.tie_embeddings and self.output.weight is not self.tok_embeddings.weight:
            n -= self.output.weight.numel()
        return n
