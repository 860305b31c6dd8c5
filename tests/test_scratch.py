"""Unit tests of the scratch decoder on tiny random models (seconds, no real weights).

transformers' own modeling code is the reference here (tests may import it; the scratch backend
does not).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize as reference_dequantize
from gguf.quants import quantize as reference_quantize

from harness.errors import HarnessError
from harness.models.scratch.config import ModelConfig, config_from_hf
from harness.models.scratch.generate import (
    Sampling,
    apply_repetition_penalty,
    generate_tokens,
    warp,
)
from harness.models.scratch.model import (
    Attention,
    RMSNorm,
    Transformer,
    apply_rotary,
    rope_cos_sin,
    rope_inv_freq,
)
from harness.models.scratch.weights import (
    dequantize,
    load_gguf,
    load_hf_dir,
    permute_rotary,
    read_gguf,
    unpermute_rotary,
)

VOCAB = 320
# The tiny models against transformers: observed max |Δ logit| 0.0 on this AVX2 CPU (both sides run
# the same aten float32 products) for logits up to 12. 1e-5 (about ten float32 units at those
# magnitudes) leaves room for CPUs that block the fused q/k/v and gate/up products differently;
# a wrong rotary, norm or bias moves logits by 1e-2 or more.
TINY_LOGITS = {"atol": 1e-5, "rtol": 1e-5}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be, or not to be, that is the question.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
    "It was the best of times, it was the worst of times.",
] * 4


def tiny_hf_config(arch: str = "llama", **overrides):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    kwargs = {
        "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    }
    kwargs.update(overrides)
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
    return cls(**kwargs)


def tiny_hf_model(config, seed: int = 0):
    """A transformers model with weights large enough that greedy choices are far from ties."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3 if "embed" in name or "lm_head" in name else 1.0 / math.sqrt(p.shape[-1]))
    return model


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer of VOCAB tokens, trained on TEXTS, saved for AutoTokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    fast.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}<s>assistant:"
    fast.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny LLaMA (llama3 rotary scaling, GQA) saved as a sharded safetensors directory."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    model = tiny_hf_model(tiny_hf_config(rope_parameters=rope))
    model.save_pretrained(str(folder), max_shard_size="100KB")
    write_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    """A tiny LLaMA with plain rotary and tied embeddings (what a GGUF file can say)."""
    folder = tmp_path_factory.mktemp("tiny-plain")
    tiny_hf_model(tiny_hf_config(tie_word_embeddings=True), seed=1).save_pretrained(str(folder))
    return folder


def scratch_from_dir(folder: Path, dtype=torch.float32) -> Transformer:
    config, tensors = load_hf_dir(folder)
    return Transformer.from_tensors(config, tensors, dtype)


def hidden_logits(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
    with torch.inference_mode():
        return model.head(model(ids, positions))


# -- building blocks ----------------------------------------------------------------------------


def test_rotary_is_rotate_half_layout():
    """Dimension i pairs with i + head_dim/2 and turns by position * inv_freq[i]."""
    config = ModelConfig("llama", 10, 8, 1, 1, 1, 8, 16, rope_theta=10000.0)
    inv_freq = rope_inv_freq(config)
    assert torch.allclose(inv_freq, 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8))
    x = torch.randn(1, 3, 1, 8)
    positions = torch.tensor([[0, 5, 17]])
    cos, sin = rope_cos_sin(inv_freq, positions, torch.float32)
    out = apply_rotary(x, cos, sin)
    as_complex = torch.complex(x[..., :4], x[..., 4:])
    angle = positions[0, :, None].float() * inv_freq
    turned = as_complex * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
    torch.testing.assert_close(out, torch.cat([turned.real, turned.imag], -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 0], x[:, 0])  # position 0 is the identity


def test_rotary_matches_transformers_with_llama3_scaling():
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    hf_config = tiny_hf_config(rope_parameters=rope)
    config = config_from_hf(hf_config.to_dict())
    assert config.rope_type == "llama3" and config.rope_original_max_len == 64
    positions = torch.tensor([[0, 1, 63, 64, 200]])
    ref_cos, ref_sin = LlamaRotaryEmbedding(hf_config)(torch.zeros(1), positions)
    cos, sin = rope_cos_sin(rope_inv_freq(config), positions, torch.float32)
    torch.testing.assert_close(cos[:, :, 0], ref_cos, atol=0, rtol=0)
    torch.testing.assert_close(sin[:, :, 0], ref_sin, atol=0, rtol=0)
    q, k = torch.randn(1, 4, 5, 16), torch.randn(1, 2, 5, 16)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, ref_cos, ref_sin)
    torch.testing.assert_close(apply_rotary(q.transpose(1, 2), cos, sin).transpose(1, 2), ref_q)
    torch.testing.assert_close(apply_rotary(k.transpose(1, 2), cos, sin).transpose(1, 2), ref_k)


def test_hf_config_of_transformers_4_style():
    d = tiny_hf_config().to_dict()
    del d["rope_parameters"]
    d.update(rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 2.0})
    config = config_from_hf(d)
    assert (config.rope_theta, config.rope_type, config.rope_factor) == (500000.0, "linear", 2.0)
    d["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    with pytest.raises(HarnessError, match="rope scaling 'yarn' is not supported"):
        config_from_hf(d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_formula(dtype):
    norm = RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64))
    norm.to(dtype)
    x = (torch.randn(3, 7, 64) * 5).to(dtype)
    # transformers' LlamaRMSNorm: float32 statistics, cast back, then the weight in the model dtype
    h = x.float()
    expected = norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
    torch.testing.assert_close(norm(x), expected, atol=1e-6 if dtype == torch.float32 else 0, rtol=1e-5 if dtype == torch.float32 else 0)


def test_grouped_query_attention_shapes_and_equivalence():
    """4 query heads over 2 key/value heads equal 4 heads whose k/v weights repeat in pairs."""
    gqa_config = ModelConfig("llama", 10, 32, 1, 4, 2, 8, 16)
    mha_config = ModelConfig("llama", 10, 32, 1, 4, 4, 8, 16)
    gqa, mha = Attention(gqa_config, 0), Attention(mha_config, 0)
    assert gqa.wqkv.weight.shape == (4 * 8 + 2 * 2 * 8, 32)
    wq, wk, wv = gqa.wqkv.weight.split([32, 16, 16])
    repeat = lambda w: w.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    with torch.no_grad():
        mha.wqkv.weight.copy_(torch.cat([wq, repeat(wk), repeat(wv)]))
        mha.wo.weight.copy_(gqa.wo.weight)
    x = torch.randn(2, 5, 32)
    cos, sin = rope_cos_sin(rope_inv_freq(gqa_config), torch.arange(5).expand(2, -1), torch.float32)
    with torch.inference_mode():
        out = gqa(x, cos, sin, None, None, None)
        assert out.shape == (2, 5, 32)
        torch.testing.assert_close(out, mha(x, cos, sin, None, None, None), atol=1e-5, rtol=1e-5)
        model = Transformer(gqa_config)
        model.setup_cache(3, 11)
        assert model.layers[0].attention.cache.k.shape == (3, 2, 11, 8)


def test_gguf_rotary_permutation_roundtrip_and_meaning():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    n_heads, head_dim, dim = 3, 8, 12
    w = torch.randn(n_heads * head_dim, dim)
    permuted = permute_rotary(w, n_heads)
    assert not torch.equal(permuted, w)
    torch.testing.assert_close(unpermute_rotary(permuted, n_heads), w, atol=0, rtol=0)
    ref = LlamaTensorProcessor()._reverse_permute_weights(permuted.numpy(), n_heads, n_heads)
    torch.testing.assert_close(unpermute_rotary(permuted, n_heads), torch.from_numpy(ref), atol=0, rtol=0)
    # meaning: rotate-half rotary on w equals interleaved (adjacent pairs) rotary on permuted w
    x, theta = torch.randn(dim), 0.7
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angle = theta * inv_freq
    q = (w @ x).view(n_heads, head_dim)
    half = torch.complex(q[:, : head_dim // 2], q[:, head_dim // 2 :]) * torch.polar(torch.ones_like(angle), angle)
    qp = (permuted @ x).view(n_heads, head_dim // 2, 2)
    inter = torch.complex(qp[..., 0], qp[..., 1]) * torch.polar(torch.ones_like(angle), angle)
    torch.testing.assert_close(torch.stack([inter.real, inter.imag], -1), torch.stack([half.real, half.imag], -1))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0", "F16", "BF16"])
def test_dequantize_is_bit_identical_to_gguf_reference(qtype):
    t = GGMLQuantizationType[qtype]
    values = np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)
    raw = reference_quantize(values, t) if qtype != "F16" else values.astype(np.float16)
    raw = np.ascontiguousarray(raw).view(np.uint8)
    ours = dequantize(raw, t, (6, 64))
    expected = reference_dequantize(raw, t).reshape(6, 64)
    assert ours.dtype == torch.float32
    np.testing.assert_array_equal(ours.numpy(), expected)


# Q5_0 and the K-quants are dequantized by the gguf package, so comparing with it proves nothing:
# these blocks are packed here from chosen integers by ggml's layouts (ggml-quants.c,
# dequantize_row_q5_0 / q4_K / q6_K), with scales that are powers of two so every product is exact
# in float32, and the known values are the reference.


def _f16(x: float) -> bytes:
    return np.float16(x).tobytes()


def test_dequantize_q5_0_of_hand_built_blocks():
    rng = np.random.default_rng(2)
    blocks, expected = [], []
    for d in (0.5, 0.125):
        q = rng.integers(0, 32, size=32)  # 5-bit quants; the value is d * (q - 16)
        qs = bytes(int(q[j] & 0xF) | int(q[j + 16] & 0xF) << 4 for j in range(16))
        qh = sum(int(q[j] >> 4) << j for j in range(32))  # bit j: the fifth bit of element j
        blocks.append(_f16(d) + qh.to_bytes(4, "little") + qs)
        expected.append(d * (q - 16))
    raw = np.frombuffer(bytearray(b"".join(blocks)), dtype=np.uint8)
    ours = dequantize(raw, GGMLQuantizationType.Q5_0, (2, 32))
    np.testing.assert_array_equal(ours.numpy(), np.array(expected, dtype=np.float32))


def _scale_min_k4(scales: list[int], mins: list[int]) -> bytes:
    """Pack eight 6-bit scales and mins into 12 bytes (ggml's get_scale_min_k4, inverted)."""
    out = [0] * 12
    for j in range(8):
        if j < 4:
            out[j] |= scales[j] & 63
            out[j + 4] |= mins[j] & 63
        else:
            out[j + 4] |= (scales[j] & 0xF) | (mins[j] & 0xF) << 4
            out[j - 4] |= (scales[j] >> 4) << 6
            out[j] |= (mins[j] >> 4) << 6
    return bytes(out)


def test_dequantize_q4_k_of_hand_built_blocks():
    rng = np.random.default_rng(3)
    d, dmin = 0.5, 0.25
    scales, mins = rng.integers(0, 64, size=8).tolist(), rng.integers(0, 64, size=8).tolist()
    q = rng.integers(0, 16, size=256)  # sub-block s holds elements 32 s .. 32 s + 31
    qs = bytearray()
    for chunk in range(4):  # 64 elements per 32 bytes: low nibbles sub-block 2c, high 2c + 1
        lo, hi = q[64 * chunk : 64 * chunk + 32], q[64 * chunk + 32 : 64 * chunk + 64]
        qs += bytes(int(a) | int(b) << 4 for a, b in zip(lo, hi))
    raw = np.frombuffer(bytearray(_f16(d) + _f16(dmin) + _scale_min_k4(scales, mins) + qs), dtype=np.uint8)
    expected = np.concatenate([d * scales[s] * q[32 * s : 32 * s + 32] - dmin * mins[s] for s in range(8)])
    ours = dequantize(raw, GGMLQuantizationType.Q4_K, (1, 256))
    np.testing.assert_array_equal(ours.numpy()[0], expected.astype(np.float32))


def test_dequantize_q6_k_of_hand_built_blocks():
    rng = np.random.default_rng(4)
    d = 0.25
    scales = rng.integers(-128, 128, size=16)  # int8 scale per 16 elements
    q = rng.integers(0, 64, size=256)  # 6-bit quants; the value is d * scale * (q - 32)
    ql, qh = bytearray(128), bytearray(64)
    for half in range(2):  # 128 elements per half: ql[64], qh[32]
        base = 128 * half
        for l in range(32):
            q1, q2, q3, q4 = (int(q[base + l + 32 * k]) for k in range(4))
            ql[64 * half + l] = (q1 & 0xF) | (q3 & 0xF) << 4
            ql[64 * half + l + 32] = (q2 & 0xF) | (q4 & 0xF) << 4
            qh[32 * half + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6
    raw = np.frombuffer(ql + qh + scales.astype(np.int8).tobytes() + _f16(d), dtype=np.uint8)
    expected = np.array([d * scales[i // 16] * (q[i] - 32) for i in range(256)], dtype=np.float32)
    ours = dequantize(raw, GGMLQuantizationType.Q6_K, (1, 256))
    np.testing.assert_array_equal(ours.numpy()[0], expected)


# -- whole models against transformers ----------------------------------------------------------


@pytest.mark.parametrize(
    "arch, overrides",
    [
        ("llama", {"tie_word_embeddings": True}),
        ("qwen2", {}),  # q/k/v biases
        ("mistral", {"sliding_window": 4}),  # sliding-window attention
    ],
)
def test_tiny_models_match_transformers(tmp_path, arch, overrides):
    model = tiny_hf_model(tiny_hf_config(arch, **overrides))
    model.save_pretrained(str(tmp_path))
    ours = scratch_from_dir(tmp_path)
    ids = torch.randint(3, VOCAB, (2, 12))
    with torch.inference_mode():
        expected = model(ids).logits
    torch.testing.assert_close(hidden_logits(ours, ids), expected, **TINY_LOGITS)
    assert ours.n_params() == sum(p.numel() for p in model.parameters())


def test_tiny_sharded_safetensors_dir_reloads(tiny_dir):
    from transformers import AutoModelForCausalLM

    assert (tiny_dir / "model.safetensors.index.json").is_file()
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32).eval()
    ours = scratch_from_dir(tiny_dir)
    ids = torch.randint(3, VOCAB, (2, 100))  # past the original 64 positions of llama3 scaling
    with torch.inference_mode():
        expected = ref(ids).logits
    torch.testing.assert_close(hidden_logits(ours, ids), expected, **TINY_LOGITS)


def test_backend_on_tiny_dir_matches_hf_backend(tiny_dir):
    from harness.models.hf import HFLanguageModel
    from harness.models.scratch import ScratchLanguageModel
    from harness.requests import GenerateRequest

    ours = ScratchLanguageModel(str(tiny_dir), batch_size=3)
    ref = HFLanguageModel(str(tiny_dir), batch_size=3)
    requests = [("The quick brown", " fox jumps"), ("To be, or not", " to be"), ("", "A journey of a thousand"),
                ("It was the best of times,", " it was")]
    # observed 0.0 here on log-probabilities of 20-100 (float32 units of 2e-6 to 8e-6): 1e-4 is about 15 units
    for (a, ga), (b, gb) in zip(ours.loglikelihood(requests), ref.loglikelihood(requests)):
        assert abs(a - b) < 1e-4 and ga == gb
    assert ours.loglikelihood([("To", ""), ("", "")]) == [(0.0, True), (0.0, True)]
    texts = [" ".join(TEXTS[:3]), TEXTS[4]]
    for (a, n), (b, m) in zip(ours.loglikelihood_rolling(texts, max_length=16), ref.loglikelihood_rolling(texts, max_length=16)):
        assert n == m and abs(a - b) < 1e-4 * n
    gen = [GenerateRequest(prompt=t[:20], max_gen_toks=12) for t in TEXTS[:5]]
    assert ours.generate(gen) == ref.generate(gen)
    assert ours.apply_chat_template([{"role": "user", "content": "hi"}]) == "<s>user: hi\n<s>assistant:"
    info = ours.info
    assert (info.backend, info.dtype, info.extra["architecture"]) == ("scratch", "float32", "llama")
    assert info.n_params == sum(p.numel() for p in ref.model.parameters())
    assert ours.fingerprint != ref.fingerprint
    assert ScratchLanguageModel(str(tiny_dir), dtype="bfloat16").fingerprint != ours.fingerprint


def test_backend_imports_no_transformers_modeling_code(tiny_dir):
    import subprocess
    import sys

    code = (
        "import sys; from harness.models.scratch import ScratchLanguageModel; "
        f"m = ScratchLanguageModel({str(tiny_dir)!r}); m.loglikelihood([('To be', ' or')]); "
        "print([k for k in sys.modules if k.startswith('transformers.models.') and '.modeling_' in k "
        "and not k.endswith('modeling_auto')] + [k for k in sys.modules if k == 'transformers.modeling_utils'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scoring_applies_the_head_only_at_scored_positions(tiny_dir, monkeypatch):
    from harness.models import torch_lm
    from harness.models.scratch import ScratchLanguageModel

    ours = ScratchLanguageModel(str(tiny_dir), batch_size=4)
    seen: list[tuple[int, ...]] = []
    head = ours.model.head
    monkeypatch.setattr(ours.model, "head", lambda h: seen.append(tuple(h.shape)) or head(h))
    monkeypatch.setattr(torch_lm, "HEAD_CHUNK_ELEMENTS", 7 * VOCAB)
    context = ours.tok_encode(" ".join(TEXTS[:4]))
    pairs = [(context, [5, 6]), (context[:10], [7]), (context[:3], [8, 9, 10])]
    results = ours.score_token_batch(pairs)
    assert sum(n for n, _ in seen) == 6  # six scored tokens, not batch x length positions
    assert all(n <= 7 for n, _ in seen)
    whole = ours.score_token_batch([pairs[0]])
    assert abs(whole[0][0] - results[0][0]) < 1e-5


# -- generation -----------------------------------------------------------------------------------


def test_sampling_matches_transformers_processors():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    history = torch.randint(0, 50, (3, 6))
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, history, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    torch.testing.assert_close(apply_repetition_penalty(logits, seen, 1.3), expected)
    s = Sampling(greedy=False, temperature=0.7, top_k=10, top_p=0.8)
    expected = TopPLogitsWarper(0.8)(history, TopKLogitsWarper(10)(history, TemperatureLogitsWarper(0.7)(history, logits.clone())))
    torch.testing.assert_close(warp(logits, s), expected)


def test_left_padded_batch_generates_as_single_rows(tiny_dir):
    model = scratch_from_dir(tiny_dir)
    prompts = [[5, 9, 30, 41, 7, 8, 100], [12], [3, 4, 5, 6]]
    batched = generate_tokens(model, prompts, 10, pad_id=2)
    single = [generate_tokens(model, [p], 10, pad_id=2)[0] for p in prompts]
    assert batched == single and all(len(x) == 10 for x in batched)
    # sampling is seeded per row: the same seed gives the same draw, alone or in company
    s = Sampling(greedy=False, temperature=1.0, top_p=0.9, seed=7)
    alone = generate_tokens(model, [prompts[0]], 8, sampling=s, pad_id=2)[0]
    assert generate_tokens(model, [prompts[0]], 8, sampling=s, pad_id=2)[0] == alone
    assert generate_tokens(model, [prompts[0], prompts[0]], 8, sampling=s, pad_id=2) == [alone, alone]


def test_generation_stops_per_row(tiny_dir):
    model = scratch_from_dir(tiny_dir)
    prompts = [[5, 9, 30], [12, 13]]
    free = generate_tokens(model, prompts, 8, pad_id=2)
    eos = free[0][2]
    out = generate_tokens(model, prompts, 8, pad_id=2, eos_ids=[eos], should_stop=lambda row, toks: row == 1 and len(toks) == 3)
    upto = lambda toks, n: (toks[: toks.index(eos)] if eos in toks else toks)[:n]
    assert out[0] == upto(free[0], 8) and len(out[0]) < 8
    assert out[1] == upto(free[1], 3)


# -- errors ---------------------------------------------------------------------------------------


def write_tiny_gguf(path: Path, arch: str = "llama", source: Path | None = None) -> dict[str, torch.Tensor]:
    """A tiny GGUF in llama.cpp's layout (permuted Q/K, ggml names); returns the HF tensors."""
    from safetensors.torch import load_file

    hf = {}
    for f in sorted(source.glob("*.safetensors")):
        hf.update(load_file(str(f)))
    cfg = json.loads((source / "config.json").read_text())
    w = GGUFWriter(str(path), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for key, t in hf.items():
        if key == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif key == "model.norm.weight":
            name = "output_norm.weight"
        elif key == "lm_head.weight":
            name = "output.weight"
        else:
            parts = key.split(".")
            name = f"blk.{parts[2]}.{names['.'.join(parts[3:-1])]}.{parts[-1]}"
        if arch == "llama" and ".attn_q." in name:
            t = permute_rotary(t, cfg["num_attention_heads"])
        if arch == "llama" and ".attn_k." in name:
            t = permute_rotary(t, cfg["num_key_value_heads"])
        arr = t.float().numpy()
        if name.endswith("ffn_up.weight"):  # one quantized tensor: a real file mixes types
            w.add_tensor(name, reference_quantize(arr, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
            hf[key] = torch.from_numpy(reference_dequantize(reference_quantize(arr, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0))
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def test_gguf_loader_unpermutes_and_maps_names(tmp_path, plain_dir):
    from transformers import AutoModelForCausalLM

    hf = write_tiny_gguf(tmp_path / "tiny.gguf", source=plain_dir)
    config, tensors, _ = load_gguf(tmp_path / "tiny.gguf")
    assert (config.n_heads, config.n_kv_heads, config.dim, config.tie_embeddings) == (4, 2, 64, True)
    got = dict(tensors)
    torch.testing.assert_close(got["layers.0.attention.wq.weight"], hf["model.layers.0.self_attn.q_proj.weight"], atol=0, rtol=0)
    torch.testing.assert_close(got["layers.1.attention.wk.weight"], hf["model.layers.1.self_attn.k_proj.weight"], atol=0, rtol=0)
    # the whole GGUF model equals transformers on the same (Q8_0-rounded) weights
    ref = AutoModelForCausalLM.from_pretrained(str(plain_dir), dtype=torch.float32).eval()
    ref.load_state_dict(hf, strict=False)
    config, tensors, _ = load_gguf(tmp_path / "tiny.gguf")
    ours = Transformer.from_tensors(config, tensors)
    ids = torch.randint(3, VOCAB, (2, 40))
    with torch.inference_mode():
        torch.testing.assert_close(hidden_logits(ours, ids), ref(ids).logits, **TINY_LOGITS)


def test_truncated_and_corrupt_gguf_errors(tmp_path, plain_dir):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, source=plain_dir)
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(HarnessError, match="truncated GGUF file"):
        read_gguf(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:300])
    with pytest.raises(HarnessError, match="truncated or corrupt GGUF header"):
        read_gguf(tmp_path / "head.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(HarnessError, match="not a GGUF file"):
        read_gguf(tmp_path / "junk.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(HarnessError, match="cannot read the GGUF file"):
        read_gguf(tmp_path / "empty.gguf")


def test_unsupported_architecture_errors(tmp_path):
    w = GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(HarnessError, match=r"architecture 'gpt2' is not supported .*supported: llama, qwen2"):
        load_gguf(tmp_path / "gpt2.gguf")
    folder = tmp_path / "gpt2-dir"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(HarnessError, match=r"architecture 'gpt2' is not supported .*llama, mistral, qwen2"):
        load_hf_dir(folder)


def test_corrupt_safetensors_errors(tmp_path, tiny_dir):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_dir, folder)
    shard = min(folder.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(HarnessError, match="truncated or corrupt safetensors"):
        scratch_from_dir(folder)
    shard.unlink()
    with pytest.raises(HarnessError, match="shard listed in the index is missing"):
        scratch_from_dir(folder)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(HarnessError, match="no model.safetensors"):
        load_hf_dir(folder)
