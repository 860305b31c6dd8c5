"""Batched generation with a static KV cache: left-padded prompts, per-row positions, sampling.

The sampling steps follow transformers' logits processors in their order (repetition penalty,
then temperature, top-k, top-p), so greedy output matches `model.generate` token for token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.models.scratch.model import Transformer


@dataclass(frozen=True)
class Sampling:
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 1234


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor over a [B, V] mask of tokens already seen."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def warp(logits: Tensor, s: Sampling) -> Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering, as transformers' warpers."""
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - s.top_p)
        remove[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def next_tokens(logits: Tensor, s: Sampling, seen: Tensor | None, generators: list[torch.Generator] | None) -> Tensor:
    """Pick one token per row from float32 logits [B, V]."""
    if seen is not None and s.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, s.repetition_penalty)
    if s.greedy:
        return logits.argmax(-1)
    probs = warp(logits, s).softmax(-1)
    # one generator per row: a row's draws do not depend on the other rows
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: Sampling = Sampling(),
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    decode_step: Callable | None = None,
    seeds: Sequence[int] | None = None,
) -> list[list[int]]:
    """Continue each prompt by up to max_new_tokens tokens; a row stops at an EOS token (not
    returned) or when should_stop(row, tokens) says so. One prefill pass over the left-padded batch,
    then one pass per new token over a static cache of prompt width + max_new_tokens slots.
    Sampled rows draw from their own generator, seeded by `seeds[row]` (default: sampling.seed),
    so a row's text does not depend on the other rows of the batch."""
    if max_new_tokens < 1 or not prompts:
        return [[] for _ in prompts]
    device = model.inv_freq.device
    B, W = len(prompts), max(len(p) for p in prompts)
    S = W + max_new_tokens
    if decode_step is not None:  # a few cache sizes, so the compiled step is reused
        S = -(-S // 256) * 256
    tokens = torch.full((B, W), pad_id, dtype=torch.long)  # [B, W], left-padded
    for i, p in enumerate(prompts):
        tokens[i, W - len(p) :] = torch.tensor(list(p), dtype=torch.long)
    tokens = tokens.to(device)
    slot_ids = torch.arange(S, device=device)
    model.setup_cache(B, S, pad=torch.tensor([W - len(p) for p in prompts]))
    try:
        logits = model.head(model(tokens, slot_ids[:W])[:, -1]).float()  # [B, V]
        seen = None
        if sampling.repetition_penalty != 1.0:
            seen = torch.zeros(B, logits.shape[-1], dtype=torch.bool, device=device)  # [B, V]
            for i, p in enumerate(prompts):
                seen[i, list(p)] = True
        generators = None
        if not sampling.greedy:
            row_seeds = list(seeds) if seeds is not None else [sampling.seed] * B
            generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in row_seeds]
        out: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        eos = set(eos_ids)
        for step in range(max_new_tokens):
            chosen = next_tokens(logits, sampling, seen, generators)  # [B]
            for i, token in enumerate(chosen.tolist()):
                if done[i]:
                    continue
                if token in eos:
                    done[i] = True
                    continue
                out[i].append(token)
                if should_stop is not None and should_stop(i, out[i]):
                    done[i] = True
            if all(done) or step == max_new_tokens - 1:
                break
            if seen is not None:
                seen.scatter_(1, chosen[:, None], True)
            slot = slot_ids[W + step : W + step + 1]  # [1]
            if decode_step is not None:  # compiled: static shapes over the whole cache
                logits = decode_step(chosen[:, None], slot)
            else:
                logits = model.head(model(chosen[:, None], slot)[:, -1]).float()
        return out
    finally:
        model.clear_cache()


def make_decode_step(model: Transformer, compile: bool) -> Callable | None:
    """A decode step over the full static cache, compiled with torch.compile (CUDA graphs on cuda)."""
    if not compile:
        return None

    def step(token: Tensor, slot: Tensor) -> Tensor:
        return model.head(model(token, slot)[:, -1]).float()

    mode = "reduce-overhead" if model.inv_freq.device.type == "cuda" else None
    return torch.compile(step, mode=mode, fullgraph=True, dynamic=False)
