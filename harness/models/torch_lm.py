"""The base of the in-process torch backends (`hf:`, `scratch:`): a transformers tokenizer, a
torch model on one device, and what both do alike (device and dtype resolution, tokenizer
properties, out-of-memory retry, identity, the converted-copy cache). Each backend loads its model
and provides the forward passes: `score_token_batch`, `generate_batch`, `position_logits` and the
benchmark's `stream_token_ids`.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError
from harness.models.base import fingerprint_parts, hash_parts
from harness.models.source import WeightSource, resolve_source
from harness.models.tokenized import LocalLM, TokenPair
from harness.requests import LoglikelihoodResponse

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEAD_CHUNK_ELEMENTS = 6 << 20  # logits per chunk of scored positions: 24 MB in float32, cache-sized
MMAP_THRESHOLD_ENV = "HARNESS_MMAP_THRESHOLD_MB"
MMAP_THRESHOLD_MB = 16


@functools.cache
def large_tensors_mapped() -> int:
    """Give every allocation of 16 MiB or more (`$HARNESS_MMAP_THRESHOLD_MB`; 0 leaves the C
    library alone) its own memory map, returned to the system when freed; answers the threshold
    in bytes set, 0 where none was (not glibc, or turned off).

    glibc serves allocations under a threshold that rises, after the first large free, up to
    32 MiB from its heap, and a freed heap block goes back only from the heap's top. Scoring a
    long batch allocates and frees a ~24 MB logits chunk (and its log-softmax) per 128 positions
    between small tensors that pin the heap's top, so the heap grew by about one chunk each time:
    peer_rolling's five 2,300-token windows in one call peaked at 3.5 GB instead of 1.2 GB.
    Mapping large blocks costs a page fault per 4 KiB on first touch (about 3% of that task's
    time) and keeps the peak at what is live."""
    try:
        mb = int(os.environ.get(MMAP_THRESHOLD_ENV, MMAP_THRESHOLD_MB))
    except ValueError:
        raise HarnessError(f"{MMAP_THRESHOLD_ENV} must be a whole number of MiB (0: leave the allocator alone)") from None
    if mb <= 0:
        return 0
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not a C library with mallopt (macOS, Windows)
        return 0
    M_MMAP_THRESHOLD = -3  # glibc's malloc.h
    return mb << 20 if mallopt(M_MMAP_THRESHOLD, mb << 20) == 1 else 0


def scored_positions(inputs: Sequence[list[int]], pairs: Sequence[TokenPair]) -> tuple[list[int], list[int], list[int]]:
    """(rows, columns, targets) of every position of right-padded `inputs` that predicts a
    continuation token of `pairs`, in order (the order score_hidden reads them in)."""
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    for i, (x, (_, cont)) in enumerate(zip(inputs, pairs)):
        rows += [i] * len(cont)
        cols += range(len(x) - len(cont), len(x))
        targets += cont
    return rows, cols, targets


def score_hidden(head: Callable[[torch.Tensor], torch.Tensor], scored: torch.Tensor, targets: list[int],
                 pairs: Sequence[TokenPair], vocab_size: int) -> list[LoglikelihoodResponse]:
    """Responses from the hidden states [N, dim] that predict `targets` (the pairs'
    continuations, concatenated): the output head and log-softmax run a chunk of positions at a
    time, so the logits held at once stay small whatever the batch and window."""
    target = torch.tensor(targets, device=scored.device)  # [N]
    chunk = max(1, HEAD_CHUNK_ELEMENTS // vocab_size)
    logprobs, greedy = [], []
    for start in range(0, len(targets), chunk):
        logits = head(scored[start : start + chunk]).float().log_softmax(-1)  # [chunk, V]
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


def resolve_device(device: str, devices: Sequence[str] = ("cpu", "cuda")) -> str:
    """`auto` is cuda where torch sees a GPU, else cpu; anything else is checked against `devices`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    if device != "cpu" and not device.startswith(tuple(d for d in devices if d != "cpu")):
        names = ", ".join(d + (", cuda:N" if d == "cuda" else "") for d in devices)
        raise HarnessError(f"unknown device {device!r}; use {names} or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` is bfloat16 on a GPU and float32 on a CPU (where bfloat16 is slower or unsupported)."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise HarnessError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return DTYPES[dtype]


def quiet_transformers() -> None:
    """transformers' own progress bars and warnings only when the user asked for logs (-v)."""
    if not logging.getLogger("harness").isEnabledFor(logging.INFO):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def hub_error(name: str, err: BaseException | None = None) -> HarnessError:
    """The one-line error for a hub id that could not be loaded."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    why = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "the hub could not be reached"
    if err is not None and not offline:
        why += f" ({type(err).__name__})"
    return HarnessError(f"model {name!r} is a Hugging Face hub id that could not be loaded: {why}; "
                        "download it while online or pass a local model directory")


def converted_copy(target: Path, write: Callable[[Path], None], record: Mapping[str, Any]) -> Path:
    """A converted copy of a model (or tokenizer) under the model cache, made once: `write(tmp)`
    fills a temporary folder, which is renamed to `target` when complete. A read-only cache costs
    time, not correctness: the temporary folder is then used (and left for the next attempt)."""
    if (target / "harness-complete.json").is_file():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    (tmp / "harness-complete.json").write_text(json.dumps(dict(record)))
    try:
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except OSError as err:
        log.warning("could not keep the converted copy in %s: %s", target, err)
        return tmp
    return target


class TorchLM(LocalLM):
    """A TokenizedLM whose tokenizer is transformers' and whose model is a torch module."""

    backend = "torch"
    # the code whose edits change this backend's numbers (beside base.SHARED_CODE)
    code_modules: tuple[str, ...] = ("harness.models.torch_lm",)
    libraries: tuple[str, ...] = ("torch", "transformers", "tokenizers")
    devices: tuple[str, ...] = ("cpu", "cuda")
    tokenizer: Any
    model: torch.nn.Module

    def _init_common(self, name: str, *, device: str, dtype: str, batch_size: int | str) -> None:
        """Spec, weight source, device, dtype and batch size, resolved as every torch backend does."""
        large_tensors_mapped()
        self.spec = f"{self.backend}:{name}"
        self.source: WeightSource = resolve_source(name)
        self.device = resolve_device(device, self.devices)
        self.dtype = resolve_dtype(dtype, self.device)
        self.dtype_name = str(self.dtype).removeprefix("torch.")
        self.auto_batch = batch_size == "auto"
        self.batch_size = (64 if self.device.startswith("cuda") else 16) if self.auto_batch else int(batch_size)
        self.load_seconds = 0.0

    def _finish_init(self, max_length: int, weights: str, settings: Mapping[str, Any]) -> None:
        """Pad token, maximum length and the cache key, once the model and tokenizer are loaded."""
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
        self._max_length = max_length
        libraries = (*self.libraries, *(("gguf", "numpy") if self.source.kind == "gguf" else ("safetensors",)))
        # what the cache key holds (docs/cache.md), kept for inspection
        self.fingerprint_parts = fingerprint_parts(
            self.backend, weights=weights, code=self.code_modules, libraries=libraries,
            settings={"dtype": self.dtype_name, "max_length": max_length,
                      "device": torch.device(self.device).type, **settings},
        )
        self._fingerprint = hash_parts(self.fingerprint_parts)

    # -- tokenizer ------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def tok_encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids

    def tok_decode(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.batch_decode([list(t) for t in tokens], skip_special_tokens=True)

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

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- scoring --------------------------------------------------------------------------------

    def run_batches(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """As TokenizedLM's; with batch_size auto, a CUDA out-of-memory error halves the batch."""
        return self._halving_on_oom(super().run_batches, pairs)

    def run_shared(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        """As TokenizedLM's, with run_batches' out-of-memory retry (the shared passes batch by
        batch_size too)."""
        return self._halving_on_oom(super().run_shared, pairs)

    def _halving_on_oom(self, run: Any, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        computed = self.tokens_computed  # a failed attempt's passes are not counted
        while True:
            try:
                return run(pairs)
            except torch.cuda.OutOfMemoryError:
                if not self.auto_batch or self.batch_size == 1:
                    raise
                self.tokens_computed = computed
                self.batch_size //= 2
                torch.cuda.empty_cache()
                log.warning("out of memory: retrying with batch size %d", self.batch_size)
