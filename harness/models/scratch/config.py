"""The decoder's hyper-parameters, read from a Hugging Face config.json or from GGUF metadata.

Architecture differences live here as settings, not as extra model classes: a LLaMA, Mistral or
Qwen2 checkpoint is the same decoder with different numbers, and the Gemma-style switches
(GeGLU, scaled embeddings, (1 + w) norms, q/k norms, post-norms, sliding-window layers) are ready
for a later family without a second model file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")
SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2")
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    # rotary embeddings (rotate-half layout, as transformers)
    rope_theta: float = 10000.0
    rope_type: str = "default"  # "default" | "linear" | "llama3"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    rope_freq_factors: tuple[float, ...] | None = None  # GGUF's rope_freqs tensor: inv_freq / f
    # switches for other families
    activation: str = "silu"  # gated MLP: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    attention_bias: bool = False  # q/k/v projections have biases (Qwen2; LLaMA's attention_bias)
    attention_out_bias: bool = False  # the output projection too (LLaMA's attention_bias, not Qwen2)
    mlp_bias: bool = False
    embedding_scale: float = 1.0  # Gemma: sqrt(dim)
    norm_weight_offset: float = 0.0  # Gemma stores w - 1 and scales by (1 + w)
    qk_norm: bool = False  # RMSNorm over each head of q and k
    post_norms: bool = False  # norms on the attention and MLP outputs before the residual add
    layer_windows: tuple[int | None, ...] = ()  # per-layer sliding window; () or None: global
    query_scale: float | None = None  # default head_dim ** -0.5
    # special tokens
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise HarnessError(
                f"model config has {self.n_heads} attention heads and {self.n_kv_heads} key/value "
                "heads; the first must be a multiple of the second"
            )
        if self.rope_type not in ROPE_TYPES:
            raise HarnessError(
                f"rope scaling {self.rope_type!r} is not supported by the scratch backend "
                f"(supported: {', '.join(ROPE_TYPES)}); use the hf backend for this model"
            )
        if self.activation not in ("silu", "gelu_tanh"):
            raise HarnessError(f"activation {self.activation!r} is not supported (silu, gelu_tanh)")

    def window(self, layer: int) -> int | None:
        return self.layer_windows[layer] if self.layer_windows else None

    @property
    def scale(self) -> float:
        return self.query_scale if self.query_scale is not None else 1.0 / math.sqrt(self.head_dim)


def unsupported(architecture: str, where: str, supported: tuple[str, ...]) -> HarnessError:
    return HarnessError(
        f"{where}: architecture {architecture!r} is not supported by the scratch backend "
        f"(supported: {', '.join(supported)}); use the hf backend (`hf:NAME`) for it"
    )


_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh"}


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def config_from_hf(d: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """A ModelConfig from a transformers config.json (LLaMA, Mistral, Qwen2)."""
    arch = d.get("model_type", "?")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise unsupported(arch, where, SUPPORTED_ARCHITECTURES)
    try:
        dim = int(d["hidden_size"])
        n_heads = int(d["num_attention_heads"])
        # transformers 5 writes rope_parameters; 4.x writes rope_theta + rope_scaling
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        window = d.get("sliding_window") if d.get("use_sliding_window", arch == "mistral") else None
        n_layers = int(d["num_hidden_layers"])
        layer_types = d.get("layer_types")
        if layer_types and d.get("sliding_window"):  # transformers 5 names each layer's attention
            windows = tuple(int(d["sliding_window"]) if t == "sliding_attention" else None for t in layer_types)
            if not any(windows):
                windows = ()
        elif arch == "qwen2" and window:  # Qwen2 slides only above max_window_layers
            first = int(d.get("max_window_layers", n_layers))
            windows = tuple(None if i < first else int(window) for i in range(n_layers))
        else:
            windows = (int(window),) * n_layers if window else ()
        return ModelConfig(
            architecture=arch,
            vocab_size=int(d["vocab_size"]),
            dim=dim,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(d.get("num_key_value_heads") or n_heads),
            head_dim=int(d.get("head_dim") or dim // n_heads),
            ffn_dim=int(d["intermediate_size"]),
            norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            max_seq_len=int(d.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            rope_theta=float(theta),
            rope_type=str(rope_type),
            rope_factor=float(rope.get("factor", 1.0)),
            rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            rope_original_max_len=int(rope.get("original_max_position_embeddings", 8192)),
            activation=_ACTIVATIONS.get(d.get("hidden_act", "silu"), str(d.get("hidden_act"))),
            attention_bias=bool(d.get("attention_bias", arch == "qwen2")),
            # transformers' Llama/Mistral put the bias on o_proj too; Qwen2 never does
            attention_out_bias=bool(d.get("attention_bias", False)) and arch != "qwen2",
            mlp_bias=bool(d.get("mlp_bias", False)),
            layer_windows=windows,
            bos_token_id=d.get("bos_token_id"),
            eos_token_ids=_ids(d.get("eos_token_id")),
            pad_token_id=d.get("pad_token_id"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise HarnessError(f"{where}: missing or bad field {err}; give a complete config.json") from None


def config_from_gguf(meta: dict[str, Any], where: str, rope_freqs: tuple[float, ...] | None = None) -> ModelConfig:
    """A ModelConfig from GGUF key/value metadata (llama.cpp's names)."""
    arch = meta.get("general.architecture", "?")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise unsupported(arch, where, SUPPORTED_GGUF_ARCHITECTURES)

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise HarnessError(f"{where}: GGUF metadata lacks {arch}.{key}; the file is incomplete")
        return value

    dim = int(get("embedding_length"))
    n_heads = int(get("attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", 0) or meta.get(f"{arch}.rope.dimension_count", 0) or dim // n_heads)
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    rope_type = {"none": "default", "linear": "linear"}.get(scaling, scaling)
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ())) or 0
    return ModelConfig(
        architecture={"llama": "llama", "qwen2": "qwen2"}[arch],
        vocab_size=int(vocab),
        dim=dim,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv") or n_heads),
        head_dim=head_dim,
        ffn_dim=int(get("feed_forward_length")),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        max_seq_len=int(get("context_length", 2048)),
        tie_embeddings=False,  # decided by the loader: no output.weight tensor means tied
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_type=rope_type,
        rope_factor=float(meta.get(f"{arch}.rope.scaling.factor", 1.0) or 1.0),
        rope_freq_factors=rope_freqs,
        attention_bias=arch == "qwen2",
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=_ids(meta.get("tokenizer.ggml.eos_token_id")),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )
