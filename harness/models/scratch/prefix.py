"""Scoring from a shared prefix (harness/models/shared_prefix.py) in the scratch decoder: a
forward pass whose tokens continue a prefix whose keys and values were computed once.

This is its own short layer loop, independent of the generation KV cache: scoring needs no cache
slots or left padding, only "every query sees all the prefix keys, then causally its own row".
The projections are Attention.forward's, op for op (the test compares shared and unshared
scores), through the same modules, so packed or quantized kernels apply here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.models.scratch.model import Transformer, apply_rotary


@dataclass
class PrefixState:
    """Keys (after rotary) and values [1, kv_heads, length, head_dim] of each layer for a prefix."""

    length: int
    kv: list[tuple[Tensor, Tensor]]


def forward_after(model: Transformer, tokens: Tensor, past: PrefixState | None) -> tuple[Tensor, PrefixState]:
    """tokens [B, T] at positions past.length.. (right padding allowed) -> normed hidden states
    [B, T, dim], and (for B == 1) the state of the prefix extended by these tokens."""
    B, T = tokens.shape
    start = past.length if past is not None else 0
    S = start + T
    x = model.tok_embeddings(tokens)  # [B, T, dim]
    if model.config.embedding_scale != 1.0:
        x = x * torch.tensor(model.config.embedding_scale, dtype=x.dtype)
    model._ensure_rope(S)
    q_pos = torch.arange(start, S, device=tokens.device)  # [T]
    distance = q_pos[:, None] - torch.arange(S, device=tokens.device)[None, :]  # [T, S]
    causal = distance >= 0
    cos = model.rope_cos[q_pos].to(x.dtype)[None, :, None]  # [1, T, 1, D]
    sin = model.rope_sin[q_pos].to(x.dtype)[None, :, None]
    kv_out: list[tuple[Tensor, Tensor]] = []
    for i, layer in enumerate(model.layers):
        attn = layer.attention
        H, K, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
        qkv = attn.wqkv(layer.attention_norm(x))  # [B, T, (H + 2K) D]
        v = qkv[..., (H + K) * D :].view(B, T, K, D).transpose(1, 2)  # [B, K, T, D]
        if attn.q_norm is None:
            qk = apply_rotary(qkv[..., : (H + K) * D].view(B, T, H + K, D), cos, sin).transpose(1, 2)
            q, k = qk[:, :H], qk[:, H:]
        else:
            q = apply_rotary(attn.q_norm(qkv[..., : H * D].view(B, T, H, D)), cos, sin).transpose(1, 2)
            k = apply_rotary(attn.k_norm(qkv[..., H * D : (H + K) * D].view(B, T, K, D)), cos, sin).transpose(1, 2)
        if past is not None:
            pk, pv = past.kv[i]
            k = torch.cat([pk.expand(B, -1, -1, -1), k], dim=2)  # [B, K, S, D]
            v = torch.cat([pv.expand(B, -1, -1, -1), v], dim=2)
        if B == 1:
            kv_out.append((k, v))
        mask = causal if attn.window is None else causal & (distance < attn.window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale, enable_gqa=H != K)
        h = attn.wo(out.transpose(1, 2).reshape(B, T, H * D))
        if layer.post_attention_norm is not None:
            h = layer.post_attention_norm(h)
        x = x + h
        h = layer.feed_forward(layer.ffn_norm(x))
        if layer.post_ffn_norm is not None:
            h = layer.post_ffn_norm(h)
        x = x + h
    return model.norm(x), PrefixState(S, kv_out)
