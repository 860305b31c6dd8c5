"""How the benchmark watches a backend generate: one callback per produced token.

The hook is a method a backend may define:

    stream_token_ids(prompts: list[list[int]], max_new_tokens: int,
                     on_token: Callable[[int, int], None]) -> list[list[int]]

greedy, EOS ignored, exactly max_new_tokens tokens per row, calling on_token(row, token) as soon as
each token exists on the host (after the step that made it has finished on the device), through
the backend's own generation path. A batched backend calls it for every row after each step; a
backend that runs one sequence at a time calls it row after row. The llamacpp backend defines it.
For the hf and scratch backends, which do not (yet), the adapters below drive the same code their
`generate` uses: transformers' `model.generate` with a streamer, and the scratch decoder's
`generate_tokens` (as benchmarks/bench_scratch.py does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.errors import HarnessError

OnToken = Callable[[int, int], None]
Streamer = Callable[[Sequence[Sequence[int]], int, OnToken], list[list[int]]]


def token_streamer(lm) -> Streamer:
    """The backend's `stream_token_ids`, or the adapter for its backend."""
    own = getattr(lm, "stream_token_ids", None)
    if callable(own):
        return own
    backend = getattr(lm, "backend", None) or getattr(getattr(lm, "info", None), "backend", None)
    if backend == "hf":
        return lambda prompts, n, on_token: _hf_stream(lm, prompts, n, on_token)
    if backend == "scratch":
        return lambda prompts, n, on_token: _scratch_stream(lm, prompts, n, on_token)
    raise HarnessError(
        f"backend {backend!r} cannot be benchmarked: it has no stream_token_ids(prompts, max_new_tokens, on_token) "
        "method (harness/benchmark/adapters.py says what it must do)"
    )


def _hf_stream(lm, prompts: Sequence[Sequence[int]], max_new_tokens: int, on_token: OnToken) -> list[list[int]]:
    import torch
    from transformers.generation.streamers import BaseStreamer

    out: list[list[int]] = [[] for _ in prompts]

    class Stream(BaseStreamer):
        seen_prompt = False

        def put(self, value) -> None:
            if not self.seen_prompt:  # generate hands over the prompt first
                self.seen_prompt = True
                return
            for row, token in enumerate(value.reshape(-1).tolist()):
                out[row].append(token)
                on_token(row, token)

        def end(self) -> None:
            pass

    ids = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=lm.device)  # equal lengths: no padding
    with torch.inference_mode():
        lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,  # EOS suppressed
                          temperature=None, top_p=None, top_k=None,
                          pad_token_id=lm.tokenizer.pad_token_id, streamer=Stream())
    return out


def _scratch_stream(lm, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    on_token: OnToken) -> list[list[int]]:
    from harness.models.scratch.generate import generate_tokens

    def should_stop(row: int, tokens: list[int]) -> bool:  # called once per new token of each row
        on_token(row, tokens[-1])
        return False

    # no eos_ids: every row runs max_new_tokens steps; the decode step is the backend's own
    # (torch.compile'd when the backend was loaded with compile=True)
    return generate_tokens(lm.model, [list(p) for p in prompts], max_new_tokens, pad_id=lm.tokenizer.pad_token_id,
                           should_stop=should_stop, decode_step=getattr(lm, "_decode_step", None))
