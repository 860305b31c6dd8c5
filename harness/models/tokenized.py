"""Shared logic for backends that own a tokenizer and score token sequences in process.

Subclasses provide tokenization, one batched forward pass and a batched generation step; this
class turns text requests into token requests the way lm-evaluation-harness does
(context/continuation split, prefix token, rolling windows, contexts longer than the model cut from
the left), batches them longest first and restores the original order.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness.models.base import LanguageModel, rolling_windows
from harness.models.shared_prefix import MIN_SAVED_TOKENS
from harness.requests import GenerateRequest, LoglikelihoodResponse, ModelInfo, RollingResponse

log = logging.getLogger(__name__)

TokenPair = tuple[list[int], list[int]]  # (context tokens, continuation tokens)
# One position of a token sequence: log P(token | tokens before it) (None where nothing predicts
# it) and the most likely tokens at that position as (token id, logprob), best first.
TokenScore = tuple[float | None, list[tuple[int, float]]]
T = TypeVar("T")
R = TypeVar("R")


class TokenizedLM(LanguageModel):
    """A LanguageModel built on `tok_encode` and `score_token_batch`."""

    batch_size: int = 8
    # Sampled requests with equal settings may share a batch: the backend seeds each row from its
    # own request (generate_batch's `requests`). Otherwise each sampled request runs alone.
    seeds_per_row: bool = False
    # Score requests that share a token prefix from one pass over it (shared_prefix.py); backends
    # that define extend_prefix and score_suffix_batch turn it on (option prefix_sharing).
    prefix_sharing: bool = False

    @property
    @abstractmethod
    def max_length(self) -> int:
        """The longest input, in tokens, that the model attends over."""

    @property
    @abstractmethod
    def prefix_token_id(self) -> int:
        """The token that conditions a text with no context: BOS if the tokenizer has one, else EOS."""

    @abstractmethod
    def tok_encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; with add_special_tokens, as the tokenizer's configuration says (BOS)."""

    @abstractmethod
    def score_token_batch(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """One forward pass: log P(continuation | context) and greedy-match for each pair.

        The input is (context + continuation)[:-1], never longer than max_length.
        """

    # -- text -> tokens -------------------------------------------------------------------------

    def encode_context(self, context: str) -> list[int]:
        """Context tokens with special tokens as the tokenizer is configured, never a second BOS."""
        return self.tok_encode(context, add_special_tokens=not self._starts_with_special(context))

    def _starts_with_special(self, text: str) -> bool:
        """True when the text already begins with a special token (a chat template added BOS)."""
        return False

    def encode_pair(self, context: str, continuation: str) -> TokenPair:
        """lm-evaluation-harness's split: trailing spaces of the context move to the continuation,
        the pair is encoded whole and cut at the context's token length."""
        if not context:
            return [self.prefix_token_id], self.tok_encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        context_enc = self.encode_context(context)
        whole_enc = self.encode_context(context + continuation)
        return context_enc, whole_enc[len(context_enc) :]

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens in these texts (for throughput figures)."""
        return sum(len(self.tok_encode(t)) for t in texts)

    # -- the contract -----------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LoglikelihoodResponse]:
        pairs = [self.encode_pair(c, x) for c, x in requests]
        return self.score_pairs(pairs)

    def loglikelihood_rolling(
        self, texts: Sequence[str], *, max_length: int | None = None, stride: int | None = None
    ) -> list[RollingResponse]:
        window = min(max_length or self.max_length, self.max_length)
        owners: list[int] = []
        pairs: list[TokenPair] = []
        counts = [0] * len(texts)
        for i, text in enumerate(texts):
            tokens = self.tok_encode(text)
            counts[i] = len(tokens)
            for pair in rolling_windows(tokens, self.prefix_token_id, window, stride):
                owners.append(i)
                pairs.append(pair)
        totals = [0.0] * len(texts)
        for owner, (logprob, _) in zip(owners, self.score_pairs(pairs)):
            totals[owner] += logprob
        return [(totals[i], counts[i]) for i in range(len(texts))]

    def score_pairs(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """Score token pairs in batches, longest first, truncating the context from the left."""
        limit = self.max_length + 1
        clipped = []
        n_cut = 0
        for ctx, cont in pairs:
            if len(ctx) + len(cont) > limit:
                n_cut += 1
                keep = limit - len(cont)
                if keep < 1:  # the continuation alone is too long: keep its tail, one token of context
                    ctx, cont = (ctx + cont)[-limit:][:1], (ctx + cont)[-limit:][1:]
                else:
                    ctx = ctx[-keep:]
            clipped.append((ctx, cont))
        self._count_truncated("loglikelihood", n_cut, len(pairs))
        if self.prefix_sharing and len(clipped) > 1:
            return self.run_shared(clipped)
        return self.run_batches(clipped)

    def run_batches(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """score_token_batch over batches of pairs that fit the model, longest first."""
        out = batched(pairs, lambda p: len(p[0]) + len(p[1]), self.batch_size, self.score_token_batch)
        self.tokens_computed += sum(max(0, len(c) + len(x) - 1) for c, x in pairs)
        return out

    def run_shared(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """The pairs scored with their shared prefixes computed once (shared_prefix.plan); the
        ones that share nothing worth a pass go through run_batches as they would unshared."""
        from harness.models.shared_prefix import plan, run_plan

        def extend(state: Any, tokens: list[int]) -> Any:
            self.tokens_computed += len(tokens)
            return self.extend_prefix(state, tokens)

        def suffixes(state: Any, batch: list[TokenPair]) -> list[LoglikelihoodResponse]:
            out = batched(batch, lambda p: len(p[0]) + len(p[1]), self.batch_size,
                          lambda rows: self.score_suffix_batch(state, rows))
            self.tokens_computed += sum(len(c) + len(x) - 1 for c, x in batch)
            return out

        many: dict[str, Any] = {}
        if hasattr(self, "extend_prefix_many"):  # one batched pass for many prefixes
            def extend_many(jobs: list[tuple[Any, list[int]]]) -> list[Any]:
                self.tokens_computed += sum(len(tokens) for _, tokens in jobs)
                return self.extend_prefix_many(jobs)

            def suffixes_many(work: list[tuple[Any, list[TokenPair]]]) -> list[list[LoglikelihoodResponse]]:
                self.tokens_computed += sum(len(c) + len(x) - 1 for _, batch in work for c, x in batch)
                return self.score_suffix_many(work)

            many = {"extend_many": extend_many, "suffixes_many": suffixes_many}
        # sibling prefixes per batched pass follow the batch size (so an out-of-memory retry shrinks them)
        return run_plan(plan(pairs, self.prefix_min_saved), pairs, unshared=self.run_batches, extend=extend, suffixes=suffixes,
                        nodes_per_pass=max(1, min(16, 2 * self.batch_size)), **many)

    # A shared prefix gets its own pass when that saves at least this many token positions
    # (shared_prefix.plan); backends whose prefix passes cost more raise it.
    prefix_min_saved = MIN_SAVED_TOKENS

    def extend_prefix(self, state: Any, tokens: list[int]) -> Any:
        """A new prefix state: `state`'s tokens (None: none) followed by `tokens`, one batch-1
        pass; `state` itself stays usable. Backends with prefix_sharing define it."""
        raise NotImplementedError(f"{type(self).__name__} does not share prefixes")

    def score_suffix_batch(self, state: Any, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """score_token_batch for pairs whose inputs continue the prefix held by `state`: each
        (context rest, continuation) is scored as if the prefix's tokens came before it."""
        raise NotImplementedError(f"{type(self).__name__} does not share prefixes")

    @property
    def tokens_computed(self) -> int:
        """Token positions run through the model for loglikelihood requests since it was loaded
        (padding excluded; a shared prefix counts once): a runner records the difference."""
        return self.__dict__.get("_tokens_computed", 0)

    @tokens_computed.setter
    def tokens_computed(self, value: int) -> None:
        self.__dict__["_tokens_computed"] = value

    # -- truncation bookkeeping ---------------------------------------------------------------------

    @property
    def truncated(self) -> Counter:
        """Requests whose context was cut to fit the model, by kind (`loglikelihood`,
        `generate_until`), since the model was loaded: a runner records the difference per task."""
        if "_truncated" not in self.__dict__:
            self._truncated: Counter = Counter()
        return self._truncated

    def _count_truncated(self, kind: str, n: int, total: int) -> None:
        if not n:
            return
        if not self.truncated[kind]:  # once per kind and model; the counts say how many after that
            log.warning("%d of %d %s requests do not fit the model's %d tokens (generation: with room "
                        "for max_gen_toks): their contexts are cut from the left, keeping the end, as "
                        "lm-evaluation-harness does; the model's `truncated` counter has the totals",
                        n, total, kind, self.max_length)
        self.truncated[kind] += n

    # -- generation -------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        """Requests grouped by their settings, each group batched longest prompt first."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            settings = (r.until, r.max_gen_toks, r.greedy, r.temperature, r.top_p, r.top_k, r.repetition_penalty)
            # sampled text must never depend on batch company: per-row seeds, or alone
            key = settings if r.greedy or self.seeds_per_row else (*settings, i)
            groups.setdefault(key, []).append(i)
        prompts = self.prompt_tokens(requests)
        for idx in groups.values():
            texts = batched(idx, lambda i: len(prompts[i]), self.batch_size,
                            lambda batch: self.generate_batch([requests[i] for i in batch], [prompts[i] for i in batch]))
            for i, text in zip(idx, texts):
                out[i] = text
        return out  # type: ignore[return-value]

    def prompt_tokens(self, requests: Sequence[GenerateRequest]) -> list[list[int]]:
        """Each prompt's tokens, cut from the left to leave room for max_gen_toks new tokens
        (lm-evaluation-harness keeps the last max_length - max_gen_toks tokens); never empty."""
        out, n_cut = [], 0
        for r in requests:
            tokens = self.encode_context(r.prompt)
            limit = max(1, self.max_length - r.max_gen_toks)
            if len(tokens) > limit:
                n_cut += 1
                tokens = tokens[-limit:]
            out.append(tokens or [self.prefix_token_id])
        self._count_truncated("generate_until", n_cut, len(requests))
        return out

    def generate_batch(self, requests: Sequence[GenerateRequest], prompts: Sequence[list[int]]) -> list[str]:
        """Continuations of token prompts that share their settings (all but the seed): texts cut
        before the first stop sequence. Backends that generate define it."""
        raise NotImplementedError(f"{type(self).__name__} does not generate")

    # -- per-token scores (what an OpenAI-compatible server echoes) -------------------------------

    def token_logprobs(self, tokens: Sequence[int], top: int = 1) -> list[TokenScore]:
        """Per position of one token sequence: log P(tokens[i] | tokens[:i]) (None at i = 0) and
        the `top` most likely tokens at i; then one entry more, for the position after the last
        token (logprob None), whose best token is the greedy continuation. One forward pass."""
        import torch

        if not 1 <= len(tokens) <= self.max_length:
            raise ValueError(f"a sequence of {len(tokens)} tokens; the model takes 1 to {self.max_length}")
        with torch.inference_mode():
            logprobs = self.position_logits(tokens).float().log_softmax(-1)  # row j predicts token j + 1
            best_lp, best_id = logprobs.topk(max(1, top), dim=-1)
            targets = torch.tensor(list(tokens[1:]), dtype=torch.long, device=logprobs.device)
            picked = logprobs[:-1].gather(-1, targets[:, None])[:, 0].tolist()
        tops = [list(zip(ids, lps)) for ids, lps in zip(best_id.tolist(), best_lp.tolist())]
        return [(None, []), *zip(picked, tops[:-1]), (None, tops[-1])]

    def position_logits(self, tokens: Sequence[int]):  # noqa: ANN201 - torch is imported lazily
        """Next-token logits after every prefix of `tokens`, a [len(tokens), vocab] tensor (one
        forward pass). Each backend defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not expose per-position logits")


class LocalLM(TokenizedLM):
    """A TokenizedLM whose weights come from a local WeightSource: the identity every in-process
    backend reports alike. Subclasses set `spec`, `source`, `device`, `dtype_name`, `_max_length`,
    `_fingerprint` and `load_seconds`, and define `n_params` and `extra_info`."""

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def n_params(self) -> int | None:
        return None

    def extra_info(self) -> dict[str, Any]:
        """Backend-specific entries of `info.extra` (architecture, kernels, ...)."""
        return {}

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.source.name,
            backend=self.backend,
            spec=self.spec,
            n_params=self.n_params(),
            dtype=self.dtype_name,
            device=self.device,
            max_length=self._max_length,
            source=self.source.location,
            extra={"load_seconds": round(self.load_seconds, 3), **self.extra_info()},
        )


def batched(
    items: Sequence[T], length: Callable[[T], int], batch_size: int, run: Callable[[list[T]], list[R]]
) -> list[R]:
    """Run `run` over batches of items sorted longest first (so padding is small and an
    out-of-memory error shows up on the first batch); return results in the input order."""
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    out: list[R | None] = [None] * len(items)
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start : start + batch_size]
        for i, result in zip(idx, run([items[i] for i in idx])):
            out[i] = result
    return out  # type: ignore[return-value]

