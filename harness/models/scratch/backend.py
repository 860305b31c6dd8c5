"""The `scratch:` backend: the harness's own decoder behind the LanguageModel contract."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.models.base import cut_at_stop
from harness.models.scratch.generate import Sampling, generate_tokens, make_decode_step
from harness.models.scratch.model import Transformer
from harness.models.scratch.weights import load_gguf, load_hf_dir
from harness.models.source import WeightSource, resolve_source, source_fingerprint
from harness.models.tokenized import TokenizedLM, TokenPair, batched
from harness.requests import GenerateRequest, LoglikelihoodResponse, ModelInfo

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEAD_CHUNK_ELEMENTS = 6 << 20  # logits per chunk of scored positions: 24 MB in float32, cache-sized
CPU_BODY_TOKENS = 2048  # tokens per forward pass when scoring on CPU


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise HarnessError(f"the scratch backend runs on cpu or cuda, not {device!r}; use cpu, cuda, cuda:N or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise HarnessError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return DTYPES[dtype]


def load_tokenizer(source: WeightSource, location: Path, digest: str):
    """The tokenizer (transformers' AutoTokenizer). A GGUF vocabulary is converted once and kept
    under the model cache (beside hf.py's converted copies), keyed by the file's sha256: the
    conversion takes seconds, loading the converted files a fraction of one."""
    from transformers import AutoTokenizer

    if source.kind != "gguf":
        return AutoTokenizer.from_pretrained(str(location))
    from harness.cache import model_cache_dir

    target = model_cache_dir() / "scratch-tokenizer" / digest[:24]
    if (target / "harness-complete.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))
    log.info("converting the tokenizer of %s (once) into %s", location, target)
    tokenizer = AutoTokenizer.from_pretrained(str(location.parent), gguf_file=location.name)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "harness-complete.json").write_text(json.dumps({"gguf": str(location), "sha256": digest}))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except OSError as err:  # a read-only cache costs time, not correctness
        log.warning("could not cache the converted tokenizer in %s: %s", target, err)
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def _hub_directory(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"]))
    except Exception as err:  # noqa: BLE001 - the hub client raises many types
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else f"the hub could not be reached ({type(err).__name__})"
        raise HarnessError(
            f"model {repo_id!r} is a Hugging Face hub id that could not be loaded: {why}; "
            "download it while online or pass a local model directory"
        ) from None


class ScratchLanguageModel(TokenizedLM):
    """The harness's own LLaMA-family decoder. `name`: built-in name, .gguf file, HF directory or hub id."""

    backend = "scratch"
    accepted_options = frozenset({"dtype", "device", "batch_size", "max_length", "compile"})

    def __init__(
        self,
        name: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int | str = 8,
        max_length: int | None = None,
        compile: bool = False,
    ):
        self.spec = f"scratch:{name}"
        self.source = resolve_source(name)
        self.device = resolve_device(device)
        if compile and not self.device.startswith("cuda"):
            raise HarnessError("compile=True is for cuda (CUDA graphs); on cpu the eager oneDNN path is "
                               "faster, so leave compile off")
        self.dtype = resolve_dtype(dtype, self.device)
        self.dtype_name = str(self.dtype).removeprefix("torch.")
        self.auto_batch = batch_size == "auto"
        self.batch_size = (64 if self.device.startswith("cuda") else 16) if self.auto_batch else int(batch_size)
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
        self.tokenizer = load_tokenizer(self.source, location, weights)
        if template and not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = template
        self.load_seconds = time.perf_counter() - started
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
        self._max_length = max_length or self.config.max_seq_len
        self._decode_step = make_decode_step(self.model, compile)
        blob = json.dumps({"backend": "scratch", "weights": weights, "dtype": self.dtype_name, "max_length": self._max_length})
        self._fingerprint = hashlib.sha256(blob.encode()).hexdigest()

    # -- tokenizer ------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def tok_encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids

    def _starts_with_special(self, text: str) -> bool:
        bos = self.tokenizer.bos_token
        return bool(bos) and text.startswith(bos)

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or None

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        if not self.chat_template:
            return super().apply_chat_template(messages)
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    # -- identity -------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.source.name,
            backend=self.backend,
            spec=self.spec,
            n_params=self.model.n_params(),
            dtype=self.dtype_name,
            device=self.device,
            max_length=self._max_length,
            source=self.source.location,
            extra={"load_seconds": round(self.load_seconds, 3), "architecture": self.config.architecture},
        )

    def close(self) -> None:
        self.model.clear_cache()

    # -- scoring --------------------------------------------------------------------------------

    def score_pairs(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        while True:
            try:
                return super().score_pairs(pairs)
            except torch.cuda.OutOfMemoryError:
                if not self.auto_batch or self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
                log.warning("out of memory: retrying with batch size %d", self.batch_size)

    @torch.inference_mode()
    def score_token_batch(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """One forward pass over the right-padded batch; the output head and log-softmax run only
        at the positions that predict a continuation token, a chunk of positions at a time."""
        if not any(cont for _, cont in pairs):  # nothing to score (a continuation merged into its context)
            return [(0.0, True)] * len(pairs)
        inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        rows, cols, targets = [], [], []
        for i, (x, (_, cont)) in enumerate(zip(inputs, pairs)):
            ids[i, : len(x)] = torch.tensor(x)
            start = len(x) - len(cont)
            rows += [i] * len(cont)
            cols += range(start, len(x))
            targets += cont
        ids = ids.to(self.device)
        positions = torch.arange(width, device=self.device).expand(len(inputs), -1)
        # On CPU the body runs over a few rows at a time: activations of ~2k tokens stay in cache
        # (about 1.3x the throughput of one 16 x 512 pass here); on a GPU, the whole batch at once.
        step = len(inputs) if self.device != "cpu" else max(1, CPU_BODY_TOKENS // width)
        rows_t, cols_t = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
        parts = []
        for first in range(0, len(inputs), step):
            hidden = self.model(ids[first : first + step], positions[first : first + step])
            keep = (rows_t >= first) & (rows_t < first + step)
            parts.append(hidden[rows_t[keep] - first, cols_t[keep]])
        scored = torch.cat(parts)  # rows are in order, so this is the order of `targets`
        del hidden, parts
        target = torch.tensor(targets, device=self.device)
        chunk = max(1, HEAD_CHUNK_ELEMENTS // self.config.vocab_size)
        logprobs, greedy = [], []
        for start in range(0, len(targets), chunk):
            logits = self.model.head(scored[start : start + chunk]).float().log_softmax(-1)
            t = target[start : start + chunk]
            logprobs.append(logits.gather(-1, t[:, None])[:, 0])
            greedy.append(logits.argmax(-1) == t)
        token_logprobs, token_greedy = torch.cat(logprobs).cpu(), torch.cat(greedy).cpu()
        results, at = [], 0
        for _, cont in pairs:
            n = len(cont)
            results.append((token_logprobs[at : at + n].sum().item(), bool(token_greedy[at : at + n].all())))
            at += n
        return results

    # -- generation -----------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerateRequest]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            settings = (r.until, r.max_gen_toks, r.greedy, r.temperature, r.top_p, r.top_k, r.repetition_penalty)
            # Sampled requests run alone, seeded, so their text never depends on batch company.
            key = settings if r.greedy else (*settings, i)
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            encoded = [self.encode_context(requests[i].prompt) for i in idx]
            texts = batched(
                list(zip(idx, encoded)),
                lambda item: len(item[1]),
                self.batch_size,
                lambda batch: self._generate_batch(requests[batch[0][0]], [e for _, e in batch]),
            )
            for i, text in zip(idx, texts):
                out[i] = text
        return out  # type: ignore[return-value]

    def generate_ids(self, prompts: list[list[int]], req: GenerateRequest) -> list[list[int]]:
        """Token ids of the continuations of token prompts (EOS and everything after it dropped)."""
        max_new = req.max_gen_toks
        limit = self._max_length - max_new
        prompts = [(p[-limit:] if limit > 0 else p[-1:]) or [self.prefix_token_id] for p in prompts]
        sampling = Sampling(
            greedy=req.greedy, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
            repetition_penalty=req.repetition_penalty, seed=req.seed,
        )
        should_stop = None
        if req.until:
            def should_stop(_row: int, tokens: list[int]) -> bool:
                # the tail is enough: a stop sequence spans only a few tokens
                text = self.tokenizer.decode(tokens[-32:], skip_special_tokens=True)
                return any(stop and stop in text for stop in req.until)

        eos = {*self.config.eos_token_ids, self.tokenizer.eos_token_id} - {None}
        return generate_tokens(
            self.model, prompts, max_new, sampling=sampling, eos_ids=sorted(eos),
            pad_id=self.tokenizer.pad_token_id, should_stop=should_stop, decode_step=self._decode_step,
        )

    def _generate_batch(self, req: GenerateRequest, prompts: list[list[int]]) -> list[str]:
        generated = self.generate_ids(prompts, req)
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [cut_at_stop(t, req.until) for t in texts]
