"""Weights for the scratch decoder: GGUF files (memory-mapped, dequantized) and Hugging Face
directories (config.json + safetensors, sharded or not).

Both loaders return a ModelConfig and a state dict in the model's own names (see model.py):
`tok_embeddings`, `layers.N.attention.{wq,wk,wv,wo}`, `layers.N.feed_forward.{w1,w2,w3}`
(gate, down, up), `layers.N.{attention_norm,ffn_norm}`, `norm`, `output`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from harness.errors import HarnessError
from harness.models.scratch.config import ModelConfig, config_from_gguf, config_from_hf

# The tensor types this loader turns into float weights; the fast ones are done in torch, the
# K-quants by the gguf package's numpy reference code.
FAST_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0")
K_QUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_TYPES = (*FAST_TYPES, "Q5_0", "Q5_1", *K_QUANTS)


# -- GGUF reading ---------------------------------------------------------------------------------
# gguf.GGUFReader builds a numpy view for every element of every metadata array (about 2 s for
# SmolLM2's 49k-token vocabulary); this reader walks the same format with struct and skips the
# tokenizer arrays, which only the (cached) tokenizer conversion needs.

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_NUMPY = {GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1", GGUFValueType.UINT16: "<u2",
          GGUFValueType.INT16: "<i2", GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
          GGUFValueType.FLOAT32: "<f4", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "<u8",
          GGUFValueType.INT64: "<i8", GGUFValueType.FLOAT64: "<f8"}


@dataclass(frozen=True)
class SkippedStrings:
    """A string array the reader did not decode (the vocabulary, the merges): only its length."""

    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # torch order (rows last-but-one), not ggml's reversed order
    type: GGMLQuantizationType
    offset: int  # absolute, in bytes
    nbytes: int


@dataclass
class GGUFFile:
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    data: np.ndarray  # the whole file, memory-mapped as uint8

    def raw(self, tensor: GGUFTensor) -> np.ndarray:
        return self.data[tensor.offset : tensor.offset + tensor.nbytes]


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise struct.error("string runs past the end of the file")
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int, key: str) -> Any:
        vtype = GGUFValueType(vtype)
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype != GGUFValueType.ARRAY:
            return self.unpack(_SCALARS[vtype])
        sub, count = GGUFValueType(self.unpack("<I")), self.unpack("<Q")
        if sub == GGUFValueType.STRING:
            if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
                for _ in range(count):
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
                return SkippedStrings(count)
            return [self.string() for _ in range(count)]
        if sub == GGUFValueType.ARRAY:
            return [self.value(GGUFValueType.ARRAY, key) for _ in range(count)]
        dtype = np.dtype(_NUMPY[sub])
        end = self.pos + dtype.itemsize * count
        if end > len(self.buf):
            raise struct.error("array runs past the end of the file")
        arr = np.frombuffer(self.buf[self.pos : end], dtype=dtype).copy()
        self.pos = end
        return arr


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header, metadata and tensor table; the data stay memory-mapped."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="c")  # copy-on-write: writable views, no copy
    except (OSError, ValueError) as err:
        raise HarnessError(f"{path}: cannot read the GGUF file ({err}); check the path") from None
    cur = _Cursor(memoryview(data))
    try:
        if bytes(data[:4]) != b"GGUF":
            raise HarnessError(f"{path}: not a GGUF file (bad magic bytes); give a .gguf model file")
        version = struct.unpack_from("<I", cur.buf, 4)[0]
        if version not in (2, 3):
            raise HarnessError(f"{path}: GGUF version {version} is not supported (2 and 3 are); "
                               "re-convert it with a current llama.cpp")
        cur.pos = 8
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.unpack("<I"), key)
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
            infos.append((name, tuple(reversed(dims)), GGMLQuantizationType(cur.unpack("<I")), cur.unpack("<Q")))
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as err:
        raise HarnessError(f"{path}: truncated or corrupt GGUF header ({err}); re-download the file") from None
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-cur.pos // alignment) * alignment
    tensors = {}
    for name, shape, qtype, offset in infos:
        block, size = GGML_QUANT_SIZES[qtype]
        n = int(np.prod(shape, dtype=np.int64))
        nbytes = n // block * size
        if start + offset + nbytes > len(data):
            raise HarnessError(
                f"{path}: truncated GGUF file (tensor {name} ends at byte {start + offset + nbytes}, "
                f"the file has {len(data)}); re-download the file"
            )
        tensors[name] = GGUFTensor(name, shape, qtype, start + offset, nbytes)
    return GGUFFile(path, metadata, tensors, data)


def dequantize(raw: np.ndarray, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 values of one GGUF tensor. The common types run in torch (several times faster
    than numpy here); each step matches the gguf package's reference arithmetic, so the result is
    bit-identical to what transformers loads."""
    name = qtype.name
    if name not in SUPPORTED_TYPES:
        raise HarnessError(f"GGUF tensor type {name} is not supported (supported: {', '.join(SUPPORTED_TYPES)})")
    buf = torch.from_numpy(np.ascontiguousarray(raw))  # a view of the memory map when aligned
    if name == "F32":
        return buf.view(torch.float32).reshape(shape).clone()
    if name == "F16":
        return buf.view(torch.float16).float().reshape(shape)
    if name == "BF16":
        return buf.view(torch.bfloat16).float().reshape(shape)
    if name in ("Q4_0", "Q4_1", "Q8_0"):
        size = GGML_QUANT_SIZES[qtype][1]
        blocks = buf.reshape(-1, size)
        d = blocks[:, :2].contiguous().view(torch.float16).float()
        if name == "Q8_0":
            return (blocks[:, 2:].contiguous().view(torch.int8).float() * d).reshape(shape)
        packed = blocks[:, 4:] if name == "Q4_1" else blocks[:, 2:]
        # low nibbles hold elements 0..15 of a block, high nibbles 16..31
        q = torch.cat([packed & 0x0F, packed >> 4], dim=1).float()
        if name == "Q4_0":
            return (d * (q - 8)).reshape(shape)
        m = blocks[:, 2:4].contiguous().view(torch.float16).float()
        return (d * q + m).reshape(shape)
    from gguf.quants import dequantize as reference_dequantize

    return torch.from_numpy(reference_dequantize(raw, qtype)).reshape(shape)


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (Meta's interleaved rotary layout -> rotate-half)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's conversion permutation (rotate-half -> interleaved); the inverse of the above."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk",
    "attn_v": "attention.wv", "attn_output": "attention.wo", "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2", "ffn_up": "feed_forward.w3",
    "attn_q_norm": "attention.q_norm", "attn_k_norm": "attention.k_norm",
    "post_attention_norm": "post_attention_norm", "post_ffw_norm": "post_ffn_norm",
}
_GGUF_TOP = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


def _gguf_name(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _GGUF_NAMES:
        return f"layers.{parts[1]}.{_GGUF_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _GGUF_TOP:
        return f"{_GGUF_TOP[parts[0]]}.{parts[1]}"
    return None


def load_gguf(path: str | Path) -> tuple[ModelConfig, Iterator[tuple[str, torch.Tensor]], GGUFFile]:
    """The config and a lazy stream of float32 tensors (model names) from a GGUF file."""
    gf = read_gguf(path)
    freqs = None
    if "rope_freqs.weight" in gf.tensors:
        t = gf.tensors["rope_freqs.weight"]
        freqs = tuple(dequantize(gf.raw(t), t.type, t.shape).tolist())
    config = config_from_gguf(gf.metadata, str(path), freqs)
    if not config.vocab_size and "token_embd.weight" in gf.tensors:
        config = _replace(config, vocab_size=gf.tensors["token_embd.weight"].shape[0])
    if "output.weight" not in gf.tensors:
        config = _replace(config, tie_embeddings=True)
    for t in gf.tensors.values():
        if t.type.name not in SUPPORTED_TYPES and _gguf_name(t.name):
            raise HarnessError(f"{path}: tensor {t.name} has type {t.type.name}, which the scratch "
                               f"backend does not read (supported: {', '.join(SUPPORTED_TYPES)})")
    permuted = config.architecture == "llama"  # llama.cpp permutes Q/K only for its LLaMA graph

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for t in gf.tensors.values():
            name = _gguf_name(t.name)
            if t.name == "rope_freqs.weight":  # read into the config above
                continue
            if name is None:  # the model reports it as unused, by its file name
                yield t.name, torch.empty(0)
                continue
            w = dequantize(gf.raw(t), t.type, t.shape)
            if permuted and name.endswith(("wq.weight", "wq.bias")):
                w = unpermute_rotary(w, config.n_heads)
            elif permuted and name.endswith(("wk.weight", "wk.bias")):
                w = unpermute_rotary(w, config.n_kv_heads)
            yield name, w

    return config, tensors(), gf


def _replace(config: ModelConfig, **changes: Any) -> ModelConfig:
    from dataclasses import replace

    return replace(config, **changes)


# -- Hugging Face directories ---------------------------------------------------------------------

_HF_LAYER = {
    "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attention.q_norm", "self_attn.k_norm": "attention.k_norm",
}


def _hf_name(name: str) -> str | None:
    name = name.removeprefix("model.")
    if name == "embed_tokens.weight":
        return "tok_embeddings.weight"
    if name == "norm.weight":
        return "norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) >= 4:
        module = ".".join(parts[2:-1])
        if module in _HF_LAYER:
            return f"layers.{parts[1]}.{_HF_LAYER[module]}.{parts[-1]}"
    return None


def load_hf_dir(path: str | Path) -> tuple[ModelConfig, Iterator[tuple[str, torch.Tensor]]]:
    """The config and a lazy stream of tensors (model names) from config.json + safetensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        raw_config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise HarnessError(f"{path / 'config.json'}: unreadable ({err}); give a Hugging Face model directory") from None
    config = config_from_hf(raw_config, str(path / "config.json"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            raise HarnessError(f"{index}: unreadable shard index ({err}); re-download the model") from None
    elif (path / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise HarnessError(f"{path}: no model.safetensors (or shard index); the scratch backend reads "
                           "safetensors only, use the hf backend for .bin checkpoints")

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for shard in shards:
            file = path / shard
            if not file.is_file():
                raise HarnessError(f"{file}: shard listed in the index is missing; re-download the model")
            try:
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                        if key.endswith("rotary_emb.inv_freq"):  # older checkpoints: recomputed
                            continue
                        name = _hf_name(key)
                        # a tensor without a place in the model is yielded under its own name,
                        # so the model reports it as unused instead of dropping it
                        yield (name, f.get_tensor(key)) if name is not None else (key, torch.empty(0))
            except SafetensorError as err:
                raise HarnessError(f"{file}: truncated or corrupt safetensors file ({err}); "
                                   "re-download the model") from None

    return config, tensors()
