"""The `scratch:` backend: the harness's own decoder behind the LanguageModel contract."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.models.base import cut_at_stop
from harness.models.scratch.fused_decode import attach as attach_fused
from harness.models.scratch.hugepages import move_weights
from harness.models.scratch.generate import Job, Sampling, generate_continuous, generate_tokens, make_decode_step
from harness.models.scratch.model import Transformer
from harness.models.scratch.prefix import PrefixState, forward_after, forward_rows_after
from harness.models.scratch.packing import apply_kernels, choose_kernels, cpu_features, requested_kernels
from harness.models.scratch.quant import parse_quant, quantize_model, requested_quant_kernels
from harness.models.scratch.weights import load_gguf, load_hf_dir
from harness.models.source import WeightSource, source_fingerprint
from harness.models.tokenized import TokenPair
from harness.models.torch_lm import TorchLM, converted_copy, hub_error, score_hidden, scored_positions
from harness.requests import GenerateRequest, LoglikelihoodResponse

log = logging.getLogger(__name__)

CPU_BODY_TOKENS = 2048  # tokens per forward pass when scoring on CPU


def load_tokenizer(source: WeightSource, location: Path, digest: str):
    """The tokenizer (transformers' AutoTokenizer). A GGUF vocabulary is converted once and kept
    under the model cache (beside hf.py's converted copies), keyed by the file's sha256: the
    conversion takes seconds, loading the converted files a fraction of one."""
    from transformers import AutoTokenizer

    if source.kind != "gguf":
        return AutoTokenizer.from_pretrained(str(location))
    from harness.cache import model_cache_dir

    target = model_cache_dir() / "scratch-tokenizer" / digest[:24]
    if not (target / "harness-complete.json").is_file():
        log.info("converting the tokenizer of %s (once) into %s", location, target)
        tokenizer = AutoTokenizer.from_pretrained(str(location.parent), gguf_file=location.name)
        try:
            target = converted_copy(target, lambda tmp: tokenizer.save_pretrained(str(tmp)),
                                    {"gguf": str(location), "sha256": digest})
        except OSError as err:  # a read-only cache costs time, not correctness
            log.warning("could not cache the converted tokenizer in %s: %s", target, err)
            return tokenizer
    return AutoTokenizer.from_pretrained(str(target))


def _hub_directory(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"]))
    except Exception as err:  # noqa: BLE001 - the hub client raises many types
        raise hub_error(repo_id, err) from None


class ScratchLanguageModel(TorchLM):
    """The harness's own LLaMA-family decoder. `name`: built-in name, .gguf file, HF directory or hub id."""

    backend = "scratch"
    accepted_options = frozenset({"dtype", "device", "batch_size", "max_length", "compile", "kernels",
                                  "quant", "group", "quant_kernels", "prefix_sharing", "fused_decode"})
    code_modules = ("harness.models.torch_lm", "harness.models.scratch")
    seeds_per_row = True  # each request samples from a generator seeded by its own seed

    def __init__(self, name: str, *, dtype: str = "float32", device: str = "cpu", batch_size: int | str = 8,
                 max_length: int | None = None, compile: bool = False, kernels: str | None = None,
                 quant: str | None = None, group: int | str | None = None, quant_kernels: str | None = None,
                 prefix_sharing: bool = True, fused_decode: bool = True):
        self._init_common(name, device=device, dtype=dtype, batch_size=batch_size)
        # not in the cache key: shared and unshared scores differ by float summation order only
        self.prefix_sharing = bool(prefix_sharing)
        if compile and not self.device.startswith("cuda"):
            raise HarnessError("compile=True is for cuda (CUDA graphs); on cpu the eager oneDNN path is "
                               "faster, so leave compile off")
        requested = requested_kernels(kernels)
        quant, group = parse_quant(quant, group)
        quant_request = requested_quant_kernels(quant_kernels)
        started = time.perf_counter()
        weights = source_fingerprint(self.source)
        if self.source.kind == "gguf":
            location = self.source.path
            self.config, tensors, gguf_file = load_gguf(location)
            template = gguf_file.metadata.get("tokenizer.chat_template")
        else:
            location = self.source.path if self.source.kind == "dir" else _hub_directory(self.source.location)
            if self.source.kind == "hub":
                weights += f"@{location.name}"  # the snapshot's commit
            self.config, tensors = load_hf_dir(location)
            template = None
        self.model = Transformer.from_tensors(self.config, tensors, self.dtype, self.device, where=str(location))
        self._n_params = self.model.n_params()  # counted before quantization packs the head apart
        # integer weights (quant.py), then the CPU-specific layout of what stays float (packing.py)
        plan = quantize_model(self.model, quant, group, device=self.device, dtype=self.dtype, requested=quant_request)
        self.quant = {"quant": quant, "group": group, "quant_kernels": plan.label} if plan else {}
        self.kernels = apply_kernels(self.model, choose_kernels(self.device, self.dtype, requested))
        # the weights onto huge pages (bit for bit the same values) before the first generation, which
        # reads them once per token; scoring, bound by arithmetic, does not wait for the ~1 s move
        self.huge_page_bytes = 0
        if self.device == "cpu":
            self.model.before_decode = self._weights_to_huge_pages
        # not in the cache key either: the fused decode step changes float summation order only
        why_not = attach_fused(self.model, enabled=bool(fused_decode) and requested != "plain")
        self.decode_kernels = "avx2-fused" if why_not is None else f"torch ({why_not})"
        self.tokenizer = load_tokenizer(self.source, location, weights)
        if template and not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = template
        self.load_seconds = time.perf_counter() - started
        self._decode_step = make_decode_step(self.model, compile)
        self._finish_init(max_length or self.config.max_seq_len, weights,
                          {"kernels": self.kernels, "compile": bool(compile), **self.quant})

    def n_params(self) -> int:
        return self._n_params

    def _weights_to_huge_pages(self) -> None:
        self.huge_page_bytes = move_weights(self.model)

    def extra_info(self) -> dict:
        return {"architecture": self.config.architecture, "kernels": self.kernels,
                "decode_kernels": self.decode_kernels, **self.quant,
                "cpu": cpu_features().capability if self.device == "cpu" else None}

    def close(self) -> None:
        self.model.clear_cache()

    # -- forward passes -------------------------------------------------------------------------

    def _right_padded(self, pairs: Sequence[TokenPair]) -> tuple[torch.Tensor, list[int], list[int], list[int], list[list[int]]]:
        """The inputs (context + continuation)[:-1] of the pairs as a right-padded [B, W] batch, and
        the (row, column) of every position that predicts a continuation token, with its target."""
        inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        ids = torch.full((len(inputs), max(len(x) for x in inputs)), self.pad_token_id, dtype=torch.long)  # [B, W]
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.tensor(x)
        return ids, *scored_positions(inputs, pairs), inputs

    @torch.inference_mode()
    def score_token_batch(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """One forward pass over the right-padded batch; the output head and log-softmax run only
        at the positions that predict a continuation token, a chunk of positions at a time."""
        if not any(cont for _, cont in pairs):  # nothing to score (a continuation merged into its context)
            return [(0.0, True)] * len(pairs)
        ids, rows, cols, targets, inputs = self._right_padded(pairs)
        width = ids.shape[1]
        ids = ids.to(self.device)
        positions = torch.arange(width, device=self.device)  # [W], the same for every row
        # On CPU the body runs over a few rows at a time: activations of ~2k tokens stay in cache
        # (about 1.3x the throughput of one 16 x 512 pass here); on a GPU, the whole batch at once.
        step = len(inputs) if self.device != "cpu" else max(1, CPU_BODY_TOKENS // width)
        rows_t, cols_t = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
        parts = []
        for first in range(0, len(inputs), step):
            hidden = self.model(ids[first : first + step], positions)  # [step, W, dim]
            keep = (rows_t >= first) & (rows_t < first + step)
            parts.append(hidden[rows_t[keep] - first, cols_t[keep]])
        scored = torch.cat(parts)  # [N, dim]: rows are in order, so this is the order of `targets`
        del hidden, parts
        return self._score_rows(scored, targets, pairs)

    def _score_rows(self, scored: torch.Tensor, targets: list[int], pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        return score_hidden(self.model.head, scored, targets, pairs, self.config.vocab_size)

    # -- shared prefixes (harness/models/shared_prefix.py) ----------------------------------------

    @torch.inference_mode()
    def extend_prefix(self, state: PrefixState | None, tokens: list[int]) -> PrefixState:
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)  # [1, T]
        return forward_after(self.model, ids, state)[1]

    @torch.inference_mode()
    def score_suffix_batch(self, state: PrefixState, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """score_token_batch for inputs that continue `state`'s prefix: one right-padded pass of
        the suffixes against the prefix's keys and values."""
        ids, rows, cols, targets, _ = self._right_padded(pairs)
        hidden, _ = forward_after(self.model, ids.to(self.device), state)  # [B, W, dim]
        scored = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
        return self._score_rows(scored, targets, pairs)

    @torch.inference_mode()
    def extend_prefix_many(self, jobs: Sequence[tuple[PrefixState | None, list[int]]]) -> list[PrefixState]:
        """extend_prefix for many (state, tokens) jobs in one right-padded pass."""
        lengths = [len(tokens) for _, tokens in jobs]
        ids = torch.full((len(jobs), max(lengths)), self.pad_token_id, dtype=torch.long)  # [B, T]
        for b, (_, tokens) in enumerate(jobs):
            ids[b, : len(tokens)] = torch.tensor(tokens)
        return forward_rows_after(self.model, ids.to(self.device), lengths, [s for s, _ in jobs], keep_state=True)[1]

    @torch.inference_mode()
    def score_suffix_many(self, work: Sequence[tuple[PrefixState, Sequence[TokenPair]]]) -> list[list[LoglikelihoodResponse]]:
        """score_suffix_batch for the requests of many prefixes at once: rows of different
        prefixes share a pass, a few thousand tokens (prefix keys included) at a time."""
        rows = [(w, state, pair) for w, (state, batch) in enumerate(work) for pair in batch]
        results: list[list[LoglikelihoodResponse]] = [[] for _ in work]
        at = 0
        while at < len(rows):
            # grow the pass while its padded size stays within the CPU budget (always at least one row)
            end, width = at + 1, len(rows[at][2][0]) + len(rows[at][2][1]) - 1
            while end < len(rows) and end - at < 4 * self.batch_size:
                w2 = max(width, len(rows[end][2][0]) + len(rows[end][2][1]) - 1)
                if self.device == "cpu" and (end + 1 - at) * w2 > CPU_BODY_TOKENS:
                    break
                end, width = end + 1, w2
            part = rows[at:end]
            pairs = [pair for _, _, pair in part]
            ids, r_idx, c_idx, targets, inputs = self._right_padded(pairs)
            hidden, _ = forward_rows_after(self.model, ids.to(self.device), [len(x) for x in inputs],
                                           [state for _, state, _ in part])
            scored = hidden[torch.tensor(r_idx, device=self.device), torch.tensor(c_idx, device=self.device)]
            for (w, _, _), response in zip(part, self._score_rows(scored, targets, pairs)):
                results[w].append(response)
            at = end
        return results

    def position_logits(self, tokens: Sequence[int]) -> torch.Tensor:
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)  # [1, T]
        with torch.inference_mode():
            return self.model.head(self.model(ids, torch.arange(len(tokens), device=self.device)))[0]  # [T, V]

    def _sampling(self, req: GenerateRequest) -> Sampling:
        return Sampling(greedy=req.greedy, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                        repetition_penalty=req.repetition_penalty, seed=req.seed)

    def _eos_ids(self) -> list[int]:
        return sorted({*self.config.eos_token_ids, self.tokenizer.eos_token_id} - {None})

    def _stopper(self, until: Callable[[int], Sequence[str]]) -> Callable[[int, list[int]], bool]:
        """should_stop for generate_continuous: job i stops once its text holds one of until(i)."""
        def should_stop(job: int, tokens: list[int]) -> bool:
            stops = until(job)
            if not stops:
                return False
            # the tail is enough: a stop sequence spans only a few tokens
            text = self.tokenizer.decode(tokens[-32:], skip_special_tokens=True)
            return any(stop and stop in text for stop in stops)

        return should_stop

    def generate(self, requests: Sequence[GenerateRequest],
                 on_answer: Callable[[int, str], None] | None = None) -> list[str]:
        """All requests through one continuous batch of `batch_size` cache slots, whatever their
        settings (each keeps its own stop sequences, budget, sampling and seed); a finished row's
        slot takes the next prompt at once. on_answer(i, text) is told as each request finishes."""
        prompts = self.prompt_tokens(requests)
        jobs = [Job(p, r.max_gen_toks, self._sampling(r), r.seed) for p, r in zip(prompts, requests)]

        def text(i: int, tokens: list[int]) -> str:
            return cut_at_stop(self.tok_decode([tokens])[0], requests[i].until)

        on_done = None if on_answer is None else (lambda i, tokens: on_answer(i, text(i, tokens)))
        generated = generate_continuous(
            self.model, jobs, self.batch_size, eos_ids=self._eos_ids(), pad_id=self.pad_token_id,
            should_stop=self._stopper(lambda i: requests[i].until), decode_step=self._decode_step, on_done=on_done,
            share_prefix=self.prefix_sharing,
        )
        return [text(i, tokens) for i, tokens in enumerate(generated)]

    def generate_ids(self, prompts: Sequence[list[int]], req: GenerateRequest,
                     seeds: Sequence[int] | None = None) -> list[list[int]]:
        """Token ids of the continuations of token prompts with one request's settings (EOS and
        everything after it dropped); sampled row i draws from a generator seeded by seeds[i]
        (default: req.seed)."""
        return generate_tokens(
            self.model, prompts, req.max_gen_toks, sampling=self._sampling(req), eos_ids=self._eos_ids(),
            pad_id=self.pad_token_id, should_stop=self._stopper(lambda _: req.until),
            decode_step=self._decode_step, seeds=seeds, slots=self.batch_size, share_prefix=self.prefix_sharing,
        )

    # -- benchmarking hook (harness.benchmark) ----------------------------------------------------

    def stream_token_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         on_token: Callable[[int, int], None]) -> list[list[int]]:
        """Greedy continuation of each token prompt by exactly max_new_tokens tokens (no EOS stop),
        calling on_token(row, token) once per new token of each row, through `generate_tokens` and
        this backend's own decode step (torch.compile'd when loaded with compile=True)."""

        def should_stop(row: int, tokens: list[int]) -> bool:
            on_token(row, tokens[-1])
            return False

        return generate_tokens(self.model, [list(p) for p in prompts], max_new_tokens, pad_id=self.pad_token_id,
                               should_stop=should_stop, decode_step=self._decode_step)
