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
    hidden, states = forward_rows_after(model, tokens, [T] * B, [past] * B, keep_state=B == 1)
    return hidden, states[0] if states else PrefixState((past.length if past is not None else 0) + T, [])


def forward_rows_after(model: Transformer, tokens: Tensor, lengths: list[int], pasts: list[PrefixState | None],
                       *, keep_state: bool = False) -> tuple[Tensor, list[PrefixState]]:
    """forward_after for a batch whose rows continue different prefixes: row b's tokens
    tokens[b, :lengths[b]] (right-padded [B, T]) sit at positions pasts[b].length.. and attend to
    that prefix's keys and values, then causally to their own. One pass for many prefixes (the
    questions of a chunk) instead of one small pass each. With keep_state, each row's extended
    prefix state is returned too."""
    B, T = tokens.shape
    device = tokens.device
    past_len = torch.tensor([p.length if p is not None else 0 for p in pasts], device=device)  # [B]
    L = int(past_len.max()) if B else 0
    index: dict[int, int] = {}  # each distinct prefix state once (the rows of one question share one)
    states: list[PrefixState] = []
    for p in pasts:
        if p is not None and p.length and id(p) not in index:
            index[id(p)] = len(states)
            states.append(p)
    # rows without a prefix point at state 0 with every prefix key masked out
    row_state = torch.tensor([index[id(p)] if p is not None and p.length else 0 for p in pasts], device=device)
    x = model.tok_embeddings(tokens)  # [B, T, dim]
    if model.config.embedding_scale != 1.0:
        x = x * torch.tensor(model.config.embedding_scale, dtype=x.dtype)
    model._ensure_rope(L + T)
    q_pos = past_len[:, None] + torch.arange(T, device=device)[None, :]  # [B, T]
    cos = model.rope_cos[q_pos].to(x.dtype)[:, :, None]  # [B, T, 1, D]
    sin = model.rope_sin[q_pos].to(x.dtype)[:, :, None]
    # key positions [B, L + T]: the prefix's 0..L-1 (valid below the row's own prefix length), then
    # the row's own tokens at past_len + t
    j = torch.arange(L, device=device)
    key_pos = torch.cat([j[None, :].expand(B, L), q_pos], dim=1)  # [B, S]
    valid = torch.cat([j[None, :] < past_len[:, None], torch.ones(B, T, dtype=torch.bool, device=device)], dim=1)
    distance = q_pos[:, :, None] - key_pos[:, None, :]  # [B, T, S]
    causal = (distance >= 0) & valid[:, None, :]
    kv_out: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(B)] if keep_state else []
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
        if L:
            pk = x.new_zeros(len(states), K, L, D)  # [U, K, L, D]: each distinct prefix once, zero-padded
            pv = x.new_zeros(len(states), K, L, D)
            for u, st in enumerate(states):
                sk, sv = st.kv[i]
                pk[u, :, : st.length] = sk[0]
                pv[u, :, : st.length] = sv[0]
            k_all = torch.cat([pk[row_state], k], dim=2)  # [B, K, L + T, D]
            v_all = torch.cat([pv[row_state], v], dim=2)
        else:
            k_all, v_all = k, v
        if keep_state:
            for b in range(B):
                n_past, n_own = int(past_len[b]), lengths[b]
                kv_out[b].append((torch.cat([k_all[b : b + 1, :, :n_past], k[b : b + 1, :, :n_own]], dim=2),
                                  torch.cat([v_all[b : b + 1, :, :n_past], v[b : b + 1, :, :n_own]], dim=2)))
        mask = causal if attn.window is None else causal & (distance < attn.window)
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask[:, None], scale=attn.scale, enable_gqa=H != K)
        h = attn.wo(out.transpose(1, 2).reshape(B, T, H * D))
        if layer.post_attention_norm is not None:
            h = layer.post_attention_norm(h)
        x = x + h
        h = layer.feed_forward(layer.ffn_norm(x))
        if layer.post_ffn_norm is not None:
            h = layer.post_ffn_norm(h)
        x = x + h
    new_states = [PrefixState(int(past_len[b]) + lengths[b], kv_out[b]) for b in range(B)] if keep_state else []
    return model.norm(x), new_states
