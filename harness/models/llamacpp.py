"""The `llamacpp:` backend: GGUF files run in process through llama-cpp-python.

Weights run as stored (Q4_1, Q4_K_M, ...): the quantized point beside hf and scratch, which
dequantize the same files to float. Log-likelihoods come from the raw logits of every position
(`logits_all=True`, `eval`, `scores`, then a log-softmax here), never from llama-cpp-python's
echo logprobs, which are wrong in 0.3.36 (/work/shared/FIELD-NOTES.md: " of" scored -10.46
through echo, -0.41 from the raw logits, -0.34 in transformers). Sequences run one at a time:
the high-level Llama object holds one sequence, so `batch_size` only groups requests.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.models.base import cut_at_stop, make_fingerprint
from harness.models.source import resolve_source, source_fingerprint
from harness.models.tokenized import LocalLM, TokenPair
from harness.requests import GenerateRequest, LoglikelihoodResponse

log = logging.getLogger(__name__)

# The Llama object keeps an n_ctx x vocab float32 buffer for logits_all (virtual until touched):
# 8192 x 262144 (Gemma 3) is 8.6 GB of address space, the model's own 32768 would be 34 GB and
# fail to allocate on a 24 GB machine. Longer contexts: pass max_length.
DEFAULT_MAX_CONTEXT = 8192


def default_threads() -> int:
    """The CPUs this process may run on (llama-cpp-python's own default is half the cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _context_length(path) -> int:
    """The training context from the GGUF's metadata (a vocabulary-only load, about 0.1 s)."""
    import llama_cpp
    from llama_cpp import _internals

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    try:
        meta = model.metadata()
    finally:
        model.close()
    value = meta.get(f"{meta.get('general.architecture')}.context_length")
    return int(value) if value and value.isdigit() else 2048


class LlamaCppLanguageModel(LocalLM):
    """A GGUF model run by llama.cpp. `name`: a built-in name or a .gguf file."""

    backend = "llamacpp"
    seeds_per_row = True  # every request is sampled alone, with its own seed
    accepted_options = frozenset({"dtype", "device", "batch_size", "max_length", "n_threads"})

    def __init__(self, name: str, *, dtype: str = "float32", device: str = "cpu", batch_size: int | str = 8,
                 max_length: int | None = None, n_threads: int | None = None):
        try:
            import llama_cpp
        except ModuleNotFoundError:
            raise HarnessError(
                "the llamacpp backend needs llama-cpp-python; install it with pip install llama-cpp-python"
            ) from None
        self.spec = f"llamacpp:{name}"
        self.source = resolve_source(name)
        if self.source.kind != "gguf":
            raise HarnessError(
                f"the llamacpp backend runs GGUF files; {name!r} is a {self.source.kind}: "
                "give a built-in name or a .gguf file, or use hf: for other models"
            )
        n_gpu_layers = 0
        if device == "auto":
            device = "cuda" if llama_cpp.llama_supports_gpu_offload() else "cpu"
        if device.startswith("cuda"):
            if not llama_cpp.llama_supports_gpu_offload():
                raise HarnessError(
                    "device cuda asked for, but this llama-cpp-python was built without GPU support; "
                    "use --device cpu or reinstall it with CMAKE_ARGS=-DGGML_CUDA=on"
                )
            n_gpu_layers = -1
        elif device != "cpu":
            raise HarnessError(f"the llamacpp backend runs on cpu or cuda, not {device!r}")
        self.device = device
        self.batch_size = 1 if batch_size == "auto" else int(batch_size)
        self.n_threads = int(n_threads or default_threads())
        from llama_cpp._utils import suppress_stdout_stderr

        started = time.perf_counter()
        try:
            self._max_length = int(max_length or min(_context_length(self.source.path), DEFAULT_MAX_CONTEXT))
            with suppress_stdout_stderr(disable=False):  # llama.cpp logs some notes even when not verbose
                self.llm = llama_cpp.Llama(
                    str(self.source.path), logits_all=True, n_ctx=self._max_length, n_threads=self.n_threads,
                    n_threads_batch=self.n_threads, n_gpu_layers=n_gpu_layers, verbose=False,
                )
        except ValueError as err:
            raise HarnessError(
                f"llama.cpp could not load {self.source.location} ({str(err).splitlines()[0]}): a corrupt file, "
                f"or an architecture llama-cpp-python {llama_cpp.__version__} does not know"
            ) from None
        self.load_seconds = time.perf_counter() - started
        self._llama_cpp = llama_cpp
        self._vocab = self.llm._model.vocab
        self.quantization = self.llm._model.desc().split(" ", 2)[-1]  # "llama ?B Q4_1 - ..." -> "Q4_1"
        self.dtype_name = self.quantization
        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        self._bos = bos if bos >= 0 else None
        self._eos = eos if eos >= 0 else None
        self._bos_text = self._special_text(self._bos)
        self._eos_text = self._special_text(self._eos)
        self._fingerprint = make_fingerprint(
            "llamacpp", weights=source_fingerprint(self.source), code=("harness.models.llamacpp",),
            libraries=("llama-cpp-python", "transformers"),
            settings={"max_length": self._max_length, "device": self.device},
        )

    def _special_text(self, token: int | None) -> str:
        if token is None:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    # -- tokenizer ------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def prefix_token_id(self) -> int:
        token = self._bos if self._bos is not None else self._eos
        if token is None:
            raise HarnessError(f"model {self.spec!r} has neither a BOS nor an EOS token to condition on")
        return token

    def tok_encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if not text:
            return [self._bos] if add_special_tokens and self._adds_bos() else []
        # special=True: special tokens written in the text (a chat template's) are parsed, as
        # transformers' tokenizers do; add_bos follows the file's add_bos_token setting.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)

    def _adds_bos(self) -> bool:
        return self._bos is not None and self.llm.tokenize(b"a", add_bos=True, special=False)[:1] == [self._bos]

    def _starts_with_special(self, text: str) -> bool:
        return bool(self._bos_text) and text.startswith(self._bos_text)

    @property
    def chat_template(self) -> str | None:
        return self.llm.metadata.get("tokenizer.chat_template") or None

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        template = self.chat_template
        if not template:
            return super().apply_chat_template(messages)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # the same sandboxed environment options as transformers' apply_chat_template
        formatter = Jinja2ChatFormatter(template, eos_token=self._eos_text, bos_token=self._bos_text,
                                        add_generation_prompt=True)
        return formatter(messages=list(messages)).prompt

    # -- identity -------------------------------------------------------------------------------

    def n_params(self) -> int:
        return int(self.llm._model.n_params())

    def extra_info(self) -> dict:
        return {"architecture": self.llm.metadata.get("general.architecture"), "n_threads": self.n_threads,
                "llama_cpp": self._llama_cpp.__version__, "file_bytes": self.source.path.stat().st_size}

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None

    # -- scoring --------------------------------------------------------------------------------

    def _eval(self, tokens: Sequence[int]) -> None:
        """Evaluate `tokens` from an empty context. Never reuse an evaluated prefix: llama.cpp's
        logits depend on how a sequence was split into batches (Gemma 3: up to 0.3 in a logit when
        the last token is evaluated alone), so reuse would make a score depend on the requests
        before it. Evaluated whole, the same request always gets the same score."""
        self.llm.reset()
        self.llm.eval(list(tokens))

    def score_token_batch(self, pairs: Sequence[TokenPair]) -> list[LoglikelihoodResponse]:
        results = []
        for ctx, cont in pairs:
            inputs = (ctx + cont)[:-1]
            self._eval(inputs)
            start = len(inputs) - len(cont)
            logits = np.asarray(self.llm.scores[start : len(inputs)], dtype=np.float64)  # row j predicts cont[j]
            top = logits.max(-1, keepdims=True)
            logprobs = logits - (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))
            target = np.asarray(cont)
            picked = logprobs[np.arange(len(cont)), target]
            results.append((float(picked.sum()), bool((logits.argmax(-1) == target).all())))
        return results

    def position_logits(self, tokens: Sequence[int]):
        import torch

        self._eval(tokens)
        return torch.from_numpy(np.array(self.llm.scores[: len(tokens)], dtype=np.float32))

    # -- generation -----------------------------------------------------------------------------

    def _token_stream(self, prompt: Sequence[int], *, greedy: bool = True, temperature: float = 0.0,
                      top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                      seed: int = 1234) -> Iterator[int]:
        """Tokens continuing `prompt` (EOS included, never stopping by itself): llama.cpp's sampler
        chain, greedy at temperature 0. Sampling order is llama.cpp's (top-k, top-p, then
        temperature), not transformers' (temperature first), so sampled texts differ from hf."""
        self.llm.reset()  # no prefix reuse: every request pays its own prefill
        self.llm.set_seed(seed)
        return self.llm.generate(
            list(prompt), temp=0.0 if greedy else temperature, top_k=max(0, top_k),
            top_p=top_p, min_p=0.0, typical_p=1.0, repeat_penalty=repetition_penalty, reset=True,
        )

    def _is_end(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def generate_batch(self, requests: Sequence[GenerateRequest], prompts: Sequence[list[int]]) -> list[str]:
        """One request after another (llama.cpp runs one sequence at a time), each with its own seed."""
        out = []
        for req, prompt in zip(requests, prompts):
            max_new = min(req.max_gen_toks, self._max_length - len(prompt))
            generated: list[int] = []
            if max_new > 0:
                stream = self._token_stream(prompt, greedy=req.greedy, temperature=req.temperature,
                                            top_k=req.top_k, top_p=req.top_p,
                                            repetition_penalty=req.repetition_penalty, seed=req.seed)
                for token in stream:
                    if self._is_end(token):
                        break
                    generated.append(token)
                    if req.until and any(stop and stop in self._detokenize(generated) for stop in req.until):
                        break
                    if len(generated) >= max_new:
                        break
                stream.close()
            out.append(cut_at_stop(self._detokenize(generated), req.until))
        return out

    def _detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="ignore")

    # -- benchmarking hook (harness.benchmark) ----------------------------------------------------

    def stream_token_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         on_token: Callable[[int, int], None]) -> list[list[int]]:
        """Greedy continuation of each token prompt by exactly max_new_tokens tokens (EOS ignored),
        calling on_token(row, token) as each token is produced, through the same sampler path as
        `generate`. Rows run one after another (one sequence at a time)."""
        out = []
        for row, prompt in enumerate(prompts):
            if len(prompt) + max_new_tokens > self._max_length:
                raise HarnessError(f"a {len(prompt)}-token prompt plus {max_new_tokens} new tokens exceeds the "
                                   f"context of {self._max_length}; pass a larger max_length")
            tokens: list[int] = []
            stream = self._token_stream(prompt)
            for token in stream:
                tokens.append(token)
                on_token(row, token)
                if len(tokens) >= max_new_tokens:
                    break
            stream.close()
            out.append(tokens)
        return out
