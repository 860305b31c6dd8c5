"""Hugging Face transformers backend: AutoModelForCausalLM and its tokenizer."""

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
from harness.models.source import WeightSource, resolve_source, source_fingerprint
from harness.models.tokenized import TokenizedLM, TokenPair, batched
from harness.requests import GenerateRequest, LoglikelihoodResponse, ModelInfo

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise HarnessError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise HarnessError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return DTYPES[dtype]


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings only when the user asked for logs (-v)."""
    if not log.isEnabledFor(logging.INFO):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


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
    _quiet_transformers()
    path = source.path
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-quantized config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.tie_weights()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "harness-complete.json").write_text(json.dumps({"gguf": source.location, "sha256": digest}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


class HFLanguageModel(TokenizedLM):
    """A causal LM from transformers. `name` is a built-in name, directory, .gguf file or hub id."""

    backend = "hf"

    def __init__(
        self,
        name: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int | str = 8,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        self.spec = f"hf:{name}"
        self.source = resolve_source(name)
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        self.auto_batch = batch_size == "auto"
        self.batch_size = (64 if self.device.startswith("cuda") else 16) if self.auto_batch else int(batch_size)
        location = self.source.location
        if self.source.kind == "gguf":
            location = str(converted_gguf_dir(self.source))
        kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **kwargs)
        except OSError as err:
            if self.source.kind == "hub":
                offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
                why = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "the hub could not be reached"
                raise HarnessError(
                    f"model {name!r} is a Hugging Face hub id that could not be loaded: {why}; "
                    "download it while online or pass a local model directory"
                ) from None
            raise HarnessError(f"model {name!r} could not be loaded: {str(err).splitlines()[0]}") from None
        self.load_seconds = time.perf_counter() - started
        self.model.to(self.device).eval()
        self.dtype_name = str(self.model.dtype).removeprefix("torch.")
        self._max_length = max_length or _config_max_length(self.model.config)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
        weights = source_fingerprint(self.source)
        if self.source.kind == "hub":
            weights += f"@{revision or getattr(self.model.config, '_commit_hash', None) or 'main'}"
        blob = json.dumps({"backend": "hf", "weights": weights, "dtype": self.dtype_name, "max_length": self._max_length})
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
            n_params=sum(p.numel() for p in self.model.parameters()),
            dtype=self.dtype_name,
            device=self.device,
            max_length=self._max_length,
            source=self.source.location,
            extra={"load_seconds": round(self.load_seconds, 3), "architecture": self.model.config.model_type},
        )

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
        inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        # Only positions that predict a continuation token need logits: keep the last `keep`.
        first = min(len(x) - len(cont) for x, (_, cont) in zip(inputs, pairs))
        keep = width - first
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), logits_to_keep=keep
        ).logits
        results = []
        for i, (x, (_, cont)) in enumerate(zip(inputs, pairs)):
            start = len(x) - len(cont) - first
            row = logits[i, start : start + len(cont)].float().log_softmax(-1)
            target = torch.tensor(cont, device=row.device)
            logprob = row.gather(-1, target[:, None]).sum().item()
            greedy = bool((row.argmax(-1) == target).all())
            results.append((logprob, greedy))
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

    @torch.inference_mode()
    def _generate_batch(self, req: GenerateRequest, prompts: list[list[int]]) -> list[str]:
        max_new = req.max_gen_toks
        limit = self._max_length - max_new
        prompts = [p[-limit:] if limit > 0 else p[-1:] for p in prompts]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row ends where generation starts
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        kwargs = {"max_new_tokens": max_new, "pad_token_id": pad, "do_sample": not req.greedy}
        if not req.greedy:
            kwargs.update(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k or None)
            torch.manual_seed(req.seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if req.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = req.repetition_penalty
        if req.until:
            kwargs.update(stop_strings=list(req.until), tokenizer=self.tokenizer)
        generated = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs
        )
        texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        return [cut_at_stop(t, req.until) for t in texts]


def _config_max_length(config) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
