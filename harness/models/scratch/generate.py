"""Generation by continuous batching over a fixed number of KV-cache slots, and sampling.

Every cache row ("slot") holds one request from position 0 (no padding), at its own length.
Requests wait in a queue, longest prompt first (as lm-evaluation-harness sorts them); when a row
finishes (EOS, a stop sequence, its token budget) its slot is refilled at once with the next
request, whose prompt is prefilled into that slot between two decode steps, so one long answer
never holds back a batch of short ones. Each request samples from its own generator, seeded by
its own seed, so its text does not depend on which batch, slot or company it lands in.

The sampling steps follow transformers' logits processors in their order (repetition penalty,
then temperature, top-k, top-p), so greedy output matches `model.generate` token for token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.models.scratch.model import Transformer
from harness.models.shared_prefix import MIN_SAVED_TOKENS, common_length


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


@dataclass(frozen=True)
class Job:
    """One prompt to continue: its tokens, its budget of new tokens, its sampling and its seed
    (None: sampling.seed)."""

    prompt: Sequence[int]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    seed: int | None = None


@dataclass
class _Slot:
    """A cache row and the request it is serving."""

    job: int  # index into the jobs
    length: int  # tokens in the cache (the position of the next token fed)
    out: list[int]
    picks: int = 0  # tokens chosen so far (EOS included)
    generator: torch.Generator | None = None


@torch.inference_mode()
def generate_continuous(
    model: Transformer,
    jobs: Sequence[Job],
    slots: int,
    *,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    decode_step: Callable | None = None,
    on_done: Callable[[int, list[int]], None] | None = None,
    share_prefix: bool = True,
) -> list[list[int]]:
    """Continue every job's prompt, `slots` rows at a time; returns the new tokens per job in the
    jobs' order. A job stops at an EOS token (not returned), after max_new_tokens tokens, or when
    should_stop(job, tokens) says so; on_done(job, tokens) is told as each job finishes. With
    `share_prefix`, a token prefix common to every prompt (a few-shot block, an instruction) is
    run once and its keys and values copied into each slot before the rest of its prompt."""
    out: list[list[int]] = [[] for _ in jobs]
    waiting = deque(i for i in sorted(range(len(jobs)), key=lambda i: -len(jobs[i].prompt))
                    if jobs[i].max_new_tokens >= 1)
    for i, job in enumerate(jobs):
        if job.max_new_tokens < 1 and on_done is not None:
            on_done(i, [])
    if not waiting:
        return out
    model.ready_for_decode()
    device = model.inv_freq.device
    B = min(slots, len(waiting))
    S = max(len(jobs[i].prompt) + jobs[i].max_new_tokens for i in waiting)
    if decode_step is not None:  # a few cache sizes, so the compiled step is reused
        S = -(-S // 256) * 256
    penalized = any(jobs[i].sampling.repetition_penalty != 1.0 for i in waiting)
    eos = set(eos_ids)
    rows: list[_Slot | None] = [None] * B
    model.setup_cache(B, S)
    try:
        prefix = _shared_prefix(model, [jobs[i].prompt for i in waiting]) if share_prefix else None
        logits = None  # [B, V]: next-token logits of every busy row
        seen = None  # [B, V]: tokens each row has seen (for the repetition penalty)
        while True:
            free = [r for r in range(B) if rows[r] is None]
            admitted = []
            for r in free:
                if not waiting:
                    break
                i = waiting.popleft()
                job = jobs[i]
                generator = None
                if not job.sampling.greedy:
                    seed = job.sampling.seed if job.seed is None else job.seed
                    generator = torch.Generator(device=device).manual_seed(int(seed))
                rows[r] = _Slot(i, len(job.prompt), out[i], generator=generator)
                admitted.append(r)
            if admitted:
                fresh = _prefill(model, [jobs[rows[r].job].prompt for r in admitted], admitted, pad_id, prefix)  # [b, V]
                if logits is None:
                    logits = fresh.new_zeros(B, fresh.shape[-1])
                index = torch.tensor(admitted, device=device)
                logits = logits.index_copy(0, index, fresh)  # a copy: a compiled step's output is its buffer
                if penalized:
                    if seen is None:
                        seen = torch.zeros(B, fresh.shape[-1], dtype=torch.bool, device=device)
                    seen[index] = False
                    for r in admitted:
                        seen[r, list(jobs[rows[r].job].prompt)] = True
            busy = [r for r in range(B) if rows[r] is not None]
            if not busy:
                return out
            chosen = _pick(logits, busy, [jobs[rows[r].job].sampling for r in busy], seen,
                           [rows[r].generator for r in busy])
            feed = torch.full((B, 1), pad_id, dtype=torch.long)  # [B, 1]: rows that continue get their token
            positions = torch.zeros((B, 1), dtype=torch.long)  # the others rewrite slot 0 of a free row
            for r, token in zip(busy, chosen):
                row = rows[r]
                row.picks += 1
                finished = token in eos
                if not finished:
                    row.out.append(token)
                    # should_stop sees every new token, the last one too (streaming callbacks use it)
                    stopped = should_stop is not None and should_stop(row.job, row.out)
                    finished = stopped or row.picks >= jobs[row.job].max_new_tokens
                if finished:
                    rows[r] = None
                    if on_done is not None:
                        on_done(row.job, row.out)
                    continue
                if seen is not None:
                    seen[r, token] = True
                feed[r, 0], positions[r, 0] = token, row.length
                row.length += 1
            if all(row is None for row in rows) and not waiting:
                return out
            feed, positions = feed.to(device), positions.to(device)
            if decode_step is not None:  # compiled: static shapes over the whole cache
                logits = decode_step(feed, positions)
            else:
                logits = model.decode_logits(feed, positions)
    finally:
        model.clear_cache()


@dataclass
class _Prefix:
    """Keys and values of the first `length` tokens every prompt shares, per layer [K, length, D]."""

    length: int
    kv: list[tuple[Tensor, Tensor]]


def _shared_prefix(model: Transformer, prompts: Sequence[Sequence[int]]) -> _Prefix | None:
    """The prefix every prompt shares, run once through cache row 0 (which is free: nothing is
    admitted yet), or None where fewer than shared_prefix.MIN_SAVED_TOKENS positions would be saved. It stops a
    token short of the shortest prompt, so every prompt's last position (its next-token logits)
    is computed in its own prefill."""
    if len(prompts) < 2:
        return None
    first, length = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        length = common_length(first, p, length)
    if length * (len(prompts) - 1) < MIN_SAVED_TOKENS:
        return None
    device = model.inv_freq.device
    tokens = torch.tensor([list(first[:length])], dtype=torch.long, device=device)
    model.forward_rows(tokens, torch.arange(length, device=device)[None], torch.tensor([0], device=device))
    caches = [layer.attention.cache for layer in model.layers]
    return _Prefix(length, [(c.k[0, :, :length].clone(), c.v[0, :, :length].clone()) for c in caches])


def _prefill(model: Transformer, prompts: Sequence[Sequence[int]], rows: Sequence[int], pad_id: int,
             prefix: _Prefix | None = None) -> Tensor:
    """Write the prompts into cache rows `rows` from slot 0 (right-padded: a padding key lies past
    its row's length, where the mask hides it until a decode step overwrites it); returns the
    logits after each prompt's last token [b, V]. With a shared prefix, its keys and values are
    copied into the rows and only the rest of each prompt runs."""
    device = model.inv_freq.device
    start = 0
    index = torch.tensor(list(rows), device=device)
    if prefix is not None:
        start = prefix.length
        for layer, (k, v) in zip(model.layers, prefix.kv):
            layer.attention.cache.k[index, :, :start] = k
            layer.attention.cache.v[index, :, :start] = v
    width = max(len(p) for p in prompts) - start
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [b, W]
    for i, p in enumerate(prompts):
        tokens[i, : len(p) - start] = torch.tensor(list(p[start:]), dtype=torch.long)
    positions = start + torch.arange(width, device=device).expand(len(prompts), width)  # [b, W]
    hidden = model.forward_rows(tokens.to(device), positions, index)
    last = torch.tensor([len(p) - 1 - start for p in prompts], device=device)
    return model.head(hidden[torch.arange(len(prompts), device=device), last]).float()


def _pick(logits: Tensor, busy: list[int], samplings: list[Sampling], seen: Tensor | None,
          generators: list[torch.Generator | None]) -> list[int]:
    """The next token of each busy row: one argmax over the plain greedy rows, and each other row
    (repetition penalty, sampling) through next_tokens with its own settings and generator."""
    plain = [r for r, s in zip(busy, samplings) if s.greedy and s.repetition_penalty == 1.0]
    picked = dict(zip(plain, logits[plain].argmax(-1).tolist())) if plain else {}
    for r, s, g in zip(busy, samplings, generators):
        if r not in picked:
            row_seen = None if seen is None else seen[r : r + 1]
            picked[r] = int(next_tokens(logits[r : r + 1], s, row_seen, [g])[0])
    return [picked[r] for r in busy]


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
    slots: int | None = None,
    share_prefix: bool = True,
) -> list[list[int]]:
    """Continue each prompt by up to max_new_tokens tokens with the same settings; a row stops at
    an EOS token (not returned) or when should_stop(row, tokens) says so. `slots` cache rows (default:
    one per prompt) by generate_continuous. Sampled row i draws from its own generator, seeded by
    `seeds[i]` (default: sampling.seed), so its text does not depend on the other rows."""
    jobs = [Job(p, max_new_tokens, sampling, None if seeds is None else seeds[i]) for i, p in enumerate(prompts)]
    return generate_continuous(model, jobs, slots or max(1, len(prompts)), eos_ids=eos_ids, pad_id=pad_id,
                               should_stop=should_stop, decode_step=decode_step, share_prefix=share_prefix)


def make_decode_step(model: Transformer, compile: bool) -> Callable | None:
    """A decode step over the full static cache, compiled with torch.compile (CUDA graphs on cuda)."""
    if not compile:
        return None

    def step(tokens: Tensor, positions: Tensor) -> Tensor:  # [B, 1] each: one token per cache row
        return model.head(model.forward_rows(tokens, positions)[:, -1]).float()

    mode = "reduce-overhead" if model.inv_freq.device.type == "cuda" else None
    return torch.compile(step, mode=mode, fullgraph=True, dynamic=False)
