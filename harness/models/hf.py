"""Hugging Face transformers backend: AutoModelForCausalLM and its tokenizer."""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.models.base import cut_at_stop
from harness.models.source import WeightSource, source_fingerprint
from harness.models.tokenized import TokenPair
from harness.models.torch_lm import TorchLM, converted_copy, hub_error, quiet_transformers, score_hidden, scored_positions
from harness.requests import GenerateRequest, LoglikelihoodResponse

log = logging.getLogger(__name__)

# Beyond this many logits in one scoring pass (64 MB in float32: a few hundred scored positions),
# the head runs a chunk of positions at a time instead of over the whole batch at once.
SPLIT_HEAD_LOGITS = 1 << 24
CPU_PASS_TOKENS = 4096  # scoring on CPU: rows per forward pass so that rows x width stays about this


def converted_gguf_dir(source: WeightSource) -> Path:
    """A plain transformers copy (safetensors + tokenizer files) of a GGUF file, made once.

    transformers dequantizes and converts the tokenizer on every GGUF load (about 20 s for
    SmolLM2 here); the copy is keyed by the GGUF's sha256 and loads several times faster.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.cache import model_cache_dir

    digest = source_fingerprint(source)
    target = model_cache_dir() / "hf-from-gguf" / digest[:24]
    if (target / "harness-complete.json").is_file():
        return target
    log.warning("converting %s to a transformers model in %s (once; about 20 s)", source.name, target)
    quiet_transformers()
    path = source.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - gguf and transformers raise many types on a bad file
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise HarnessError(f"{source.location}: not a GGUF file transformers can read ({type(err).__name__}: "
                           f"{first}); the file is truncated, corrupt or of an unsupported architecture") from None
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-quantized config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.tie_weights()

    def write(tmp: Path) -> None:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    return converted_copy(target, write, {"gguf": source.location, "sha256": digest})


class HFLanguageModel(TorchLM):
    """A causal LM from transformers. `name` is a built-in name, directory, .gguf file or hub id."""

    backend = "hf"
    accepted_options = frozenset({"dtype", "device", "batch_size", "max_length", "trust_remote_code", "revision",
                                  "prefix_sharing"})
    code_modules = ("harness.models.torch_lm", "harness.models.hf")
    devices = ("cpu", "cuda", "mps")
    seeds_per_row = True  # sampled rows draw from their own generators (RowSampler)
    # Each shared prefix is its own batch-1 pass here (no batching across sibling prefixes, as
    # scratch: has): on a CPU one costs about what 128 tokens of a batch do. Measured on
    # knowledge_mc, 40 questions: 0-shot 14.3 s at 32 -> 10.6 s, 3-shot 20.3 s -> 16.9 s.
    prefix_min_saved = 128

    def __init__(self, name: str, *, dtype: str = "float32", device: str = "cpu", batch_size: int | str = 8,
                 max_length: int | None = None, trust_remote_code: bool = False, revision: str | None = None,
                 prefix_sharing: bool = True):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        self._init_common(name, device=device, dtype=dtype, batch_size=batch_size)
        # not in the cache key: shared and unshared scores differ by float summation order only
        self.prefix_sharing = bool(prefix_sharing)
        location = self.source.location
        if self.source.kind == "gguf":
            location = str(converted_gguf_dir(self.source))
        kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(location, dtype=self.dtype, **kwargs)
        except OSError as err:
            if self.source.kind == "hub":
                raise hub_error(name) from None
            raise HarnessError(f"model {name!r} could not be loaded: {str(err).splitlines()[0]}") from None
        self.load_seconds = time.perf_counter() - started
        self.model.to(self.device).eval()
        weights = source_fingerprint(self.source)
        if self.source.kind == "hub":
            weights += f"@{revision or getattr(self.model.config, '_commit_hash', None) or 'main'}"
        self._finish_init(max_length or _config_max_length(self.model.config), weights,
                          {"trust_remote_code": trust_remote_code})

    def extra_info(self) -> dict:
        return {"architecture": self.model.config.model_type}

    # -- forward passes -------------------------------------------------------------------------

    @torch.inference_mode()
    def score_token_batch(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        width = max(len(x) for x in inputs)
        step = max(1, CPU_PASS_TOKENS // width)
        if self.device == "cpu" and len(pairs) > step:
            # On a CPU a few rows at a time: the activations (and attention's [rows, heads, W, W]
            # scores) of long rows stay small, at no cost in speed (batching buys little here).
            return [r for a in range(0, len(pairs), step) for r in self.score_token_batch(pairs[a : a + step])]
        ids = torch.full((len(inputs), width), self.pad_token_id, dtype=torch.long)  # [B, W], right-padded
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        return self._scores(ids, mask, inputs, pairs)

    def _scores(self, ids: torch.Tensor, mask: torch.Tensor, inputs: list[list[int]], pairs: Sequence[TokenPair],
                **extra) -> list[LoglikelihoodResponse]:
        """One forward pass over right-padded inputs (`extra`: a prefix's cache). Only positions
        that predict a continuation token need logits: the last `keep` of each row. Where those
        logits would be large (long rolling windows), the body runs alone and the head runs over
        the scored positions a chunk at a time (score_hidden), as transformers' own forward would
        compute them, without the [batch, keep, vocab] tensor."""
        first = min(len(x) - len(cont) for x, (_, cont) in zip(inputs, pairs))
        keep = ids.shape[1] - first
        ids, mask = ids.to(self.device), mask.to(self.device)
        split = self._split_head() if len(inputs) * keep * self.vocab_size > SPLIT_HEAD_LOGITS else None
        if split is None:
            logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, **extra).logits
            return self._responses(logits, inputs, pairs, first)  # logits: [B, keep, V]
        body, head = split
        hidden = body(input_ids=ids, attention_mask=mask, **extra).last_hidden_state  # [B, W, dim]
        rows, cols, targets = scored_positions(inputs, pairs)
        scored = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
        del hidden
        return score_hidden(head, scored, targets, pairs, self.vocab_size)

    @functools.cached_property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def _split_head(self) -> tuple[Callable, Callable] | None:
        """(body, head) where the model's logits are exactly head(body(...).last_hidden_state):
        checked once on a few tokens against the whole model, so an architecture that scales or
        caps its logits (or wraps its head otherwise) keeps transformers' own forward."""
        if "_split" not in self.__dict__:
            self._split = None
            body, head = getattr(self.model, "base_model", None), self.model.get_output_embeddings()
            if body is not None and body is not self.model and head is not None:
                ids = torch.tensor([[self.prefix_token_id, 1, 2, 3]], device=self.device)
                with torch.inference_mode():
                    whole = self.model(input_ids=ids).logits
                    parts = head(body(input_ids=ids).last_hidden_state)
                if whole.shape == parts.shape and torch.allclose(whole, parts, atol=1e-5, rtol=1e-5):
                    self._split = (body, head)
        return self._split

    @staticmethod
    def _responses(logits: torch.Tensor, inputs: list[list[int]], pairs: Sequence[TokenPair],
                   first: int) -> list[LoglikelihoodResponse]:
        """Responses from logits [B, W - first, V] of right-padded inputs (position `first` on)."""
        results = []
        for i, (x, (_, cont)) in enumerate(zip(inputs, pairs)):
            start = len(x) - len(cont) - first
            row = logits[i, start : start + len(cont)].float().log_softmax(-1)
            target = torch.tensor(cont, device=row.device)
            logprob = row.gather(-1, target[:, None]).sum().item()
            greedy = bool((row.argmax(-1) == target).all())
            results.append((logprob, greedy))
        return results

    # -- shared prefixes (harness/models/shared_prefix.py): transformers' past_key_values -----------

    @torch.inference_mode()
    def extend_prefix(self, state, tokens: list[int]):  # noqa: ANN001, ANN201 - a transformers Cache
        """The prefix's DynamicCache (batch 1) extended by `tokens`; `state` is left as it was."""
        from transformers import DynamicCache

        cache = copy.deepcopy(state) if state is not None else DynamicCache(config=self.model.config)
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        self.model(input_ids=ids, **{self._cache_kwarg: cache}, use_cache=True, logits_to_keep=1)
        return cache

    @property
    def _cache_kwarg(self) -> str:
        """transformers 5.x calls past_key_values `cache` (the old name is deprecated)."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @torch.inference_mode()
    def score_suffix_batch(self, state, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:  # noqa: ANN001
        """score_token_batch for inputs that continue the prefix in `state`: the right-padded
        suffixes in one pass over a copy of its cache repeated along the batch."""
        inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        width = max(len(x) for x in inputs)
        n_past = state.get_seq_length()
        ids = torch.full((len(inputs), width), self.pad_token_id, dtype=torch.long)  # [B, W], right-padded
        mask = torch.zeros((len(inputs), n_past + width), dtype=torch.long)  # the prefix, then each row
        mask[:, :n_past] = 1
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, n_past : n_past + len(x)] = 1
        cache = copy.deepcopy(state)
        cache.batch_repeat_interleave(len(inputs))
        return self._scores(ids, mask, inputs, pairs, **{self._cache_kwarg: cache}, use_cache=True)

    def position_logits(self, tokens: Sequence[int]) -> torch.Tensor:
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            return self.model(input_ids=ids).logits[0]  # [T, V]

    def _left_padded(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids and attention mask [B, W]: every row ends where generation starts."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(list(p))
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate_batch(self, requests: Sequence[GenerateRequest], prompts: Sequence[list[int]]) -> list[str]:
        req = requests[0]  # one group's settings (all but the seed)
        ids, mask = self._left_padded(prompts)
        kwargs = {"max_new_tokens": req.max_gen_toks, "pad_token_id": self.pad_token_id, "do_sample": False,
                  "temperature": None, "top_p": None, "top_k": None}
        if not req.greedy:
            # Greedy search over logits that a per-row sampler has reduced to the token it drew:
            # each row samples from its own generator, so batched sampling is reproducible and
            # independent of the batch (transformers' own sampling draws every row from one RNG).
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([RowSampler(req, [r.seed for r in requests], ids.device)])
        if req.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = req.repetition_penalty
        if req.until:
            kwargs.update(stop_strings=list(req.until), tokenizer=self.tokenizer)
        generated = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        return [cut_at_stop(t, req.until) for t in self.tok_decode(generated[:, ids.shape[1] :].tolist())]

    # -- benchmarking hook (harness.benchmark) ----------------------------------------------------

    def stream_token_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         on_token: Callable[[int, int], None]) -> list[list[int]]:
        """Greedy continuation of each (equal-length) token prompt by exactly max_new_tokens
        tokens, EOS suppressed, calling on_token(row, token) as each step's tokens reach the host:
        transformers' `model.generate`, the path `generate` takes, with a streamer."""
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

        ids, mask = self._left_padded(prompts)
        with torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                temperature=None, top_p=None, top_k=None,
                                pad_token_id=self.pad_token_id, streamer=Stream())
        return out


class RowSampler:
    """A transformers logits processor that samples each row from its own torch.Generator, seeded
    by that row's request: temperature, top-k and top-p through transformers' own warpers, in the
    order `generate(do_sample=True)` applies them (after the repetition penalty), then one
    multinomial draw per row; every other token's score becomes -inf, so greedy search takes it."""

    def __init__(self, req: GenerateRequest, seeds: Sequence[int], device: torch.device):
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.warpers = []
        if req.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(req.temperature))
        if req.top_k:
            self.warpers.append(TopKLogitsWarper(req.top_k))
        if req.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(req.top_p))
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = scores.softmax(-1)  # [B, V]
        chosen = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)


def _config_max_length(config) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
