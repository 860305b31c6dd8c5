"""The scratch backend's per-machine kernels, its loader's strictness, per-request seeds and
context truncation, on tiny random models (seconds). References: transformers' modeling code and
the scratch decoder's own plain float32 / plain bfloat16 paths."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_scratch import VOCAB, hidden_logits, tiny_hf_config, tiny_hf_model, write_tokenizer

from harness.errors import HarnessError
from harness.models.scratch import ScratchLanguageModel
from harness.models.scratch.packing import KERNELS_ENV, choose_kernels, cpu_features, onednn_works
from harness.models.scratch.weights import load_hf_dir
from harness.models.scratch.model import Transformer
from harness.requests import GenerateRequest

PACKABLE = cpu_features().bf16_packing and onednn_works(torch.bfloat16)
WHY_NOT_PACKABLE = (f"this CPU ({cpu_features().capability}) lacks AVX-512 BW/VL/DQ and AVX-NE-CONVERT, "
                    "which oneDNN's bfloat16 weight packing needs")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-backend")
    tiny_hf_model(tiny_hf_config()).save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


def logits_of(lm: ScratchLanguageModel, ids: torch.Tensor) -> torch.Tensor:
    return hidden_logits(lm.model, ids).float()


# -- kernels ---------------------------------------------------------------------------------------


def test_kernel_choice_follows_the_cpu():
    feats = cpu_features()
    assert feats.capability == torch.backends.cpu.get_cpu_capability()
    flags = open("/proc/cpuinfo").read()
    assert feats.bf16_packing == (("avx512bw" in flags and "avx512vl" in flags and "avx512dq" in flags)
                                  or "avx_ne_convert" in flags)
    expected = "onednn-bf16-packed" if PACKABLE else "onednn-bf16-fp32"
    assert choose_kernels("cpu", torch.bfloat16) == expected
    assert choose_kernels("cpu", torch.bfloat16, "fallback") == "onednn-bf16-fp32"
    assert choose_kernels("cpu", torch.float32, "plain") == "aten"
    assert choose_kernels("cuda", torch.bfloat16) == "aten"


def _bf16_reference(folder) -> Transformer:
    config, tensors = load_hf_dir(folder)
    return Transformer.from_tensors(config, tensors, torch.bfloat16)  # plain F.linear in bfloat16


def test_bfloat16_fallback_path_runs_everywhere_and_matches_plain_bfloat16(tiny, monkeypatch):
    """Forced through the environment, as on an AVX2-only CPU: bfloat16 weights widened to float32
    (exactly), float32 products, outputs rounded to bfloat16. Measured against plain bfloat16
    F.linear (three seeds): equal, or one bfloat16 unit in the last place apart; against float32,
    max |Δ logit| 0.18-0.19 on logits up to 10 (bfloat16 rounding), bounded here at 0.3."""
    monkeypatch.setenv(KERNELS_ENV, "fallback")
    lm = ScratchLanguageModel(str(tiny), dtype="bfloat16")
    assert lm.info.extra["kernels"] == "onednn-bf16-fp32" and lm.info.dtype == "bfloat16"
    ids = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    ours = logits_of(lm, ids)
    plain = hidden_logits(_bf16_reference(tiny), ids).float()
    fp32 = logits_of(ScratchLanguageModel(str(tiny), kernels="plain"), ids)
    one_ulp = 2.0 ** (math.floor(math.log2(fp32.abs().max().item())) - 7)  # bfloat16 keeps 8 bits
    assert (ours - plain).abs().max() <= one_ulp
    assert (ours - fp32).abs().max() <= 0.3
    pairs = [([1, 5, 9, 30], [40, 41, 42])]
    assert lm.score_token_batch(pairs)[0][0] == pytest.approx(
        ScratchLanguageModel(str(tiny)).score_token_batch(pairs)[0][0], abs=0.1)


@pytest.mark.skipif(not PACKABLE, reason=WHY_NOT_PACKABLE)
def test_bfloat16_packed_path_matches_the_fallback(tiny):
    packed = ScratchLanguageModel(str(tiny), dtype="bfloat16", kernels="onednn")
    fallback = ScratchLanguageModel(str(tiny), dtype="bfloat16", kernels="fallback")
    assert packed.info.extra["kernels"] == "onednn-bf16-packed"
    assert packed.model.output.weight.is_mkldnn
    ids = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    # both accumulate in float32 and round each product to bfloat16: a few units in the last place
    one_ulp = 2.0 ** (math.floor(math.log2(logits_of(fallback, ids).abs().max().item())) - 7)
    assert (logits_of(packed, ids) - logits_of(fallback, ids)).abs().max() <= 4 * one_ulp


@pytest.mark.skipif(PACKABLE, reason="this CPU can pack bfloat16 weights")
def test_forcing_the_packed_path_where_it_cannot_run_is_a_one_line_error(tiny):
    with pytest.raises(HarnessError, match="cannot pack bfloat16 weights"):
        ScratchLanguageModel(str(tiny), dtype="bfloat16", kernels="onednn")


def test_unknown_kernel_choice_is_an_error(tiny, monkeypatch):
    monkeypatch.setenv(KERNELS_ENV, "fastest")
    with pytest.raises(HarnessError, match="HARNESS_CPU_KERNELS='fastest'.*auto, onednn, fallback, plain"):
        ScratchLanguageModel(str(tiny))


# -- the loader ------------------------------------------------------------------------------------


def test_llama_attention_bias_keeps_the_output_projection_bias(tmp_path):
    """LLaMA's attention_bias puts biases on q, k, v and o; o_proj.bias used to be dropped."""
    model = tiny_hf_model(tiny_hf_config(attention_bias=True))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.bias.normal_(0.0, 0.5)
    model.save_pretrained(str(tmp_path))
    config, tensors = load_hf_dir(tmp_path)
    ours = Transformer.from_tensors(config, tensors)
    ids = torch.randint(3, VOCAB, (2, 10))
    with torch.inference_mode():
        expected = model(ids).logits
    # observed 0.0 (the same aten products); 1e-5 as tests/test_scratch.py's TINY_LOGITS says
    torch.testing.assert_close(hidden_logits(ours, ids), expected, atol=1e-5, rtol=1e-5)


def test_tensors_without_a_place_in_the_model_are_an_error_naming_them(tmp_path):
    tiny_hf_model(tiny_hf_config()).save_pretrained(str(tmp_path))
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["model.layers.0.mlp.extra_proj.weight"] = torch.zeros(4, 4)
    weights["model.layers.1.self_attn.o_proj.bias"] = torch.zeros(64)  # config says no biases
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    config, tensors = load_hf_dir(tmp_path)
    with pytest.raises(HarnessError) as err:
        Transformer.from_tensors(config, tensors, where=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "2 tensors" in message
    assert "model.layers.0.mlp.extra_proj.weight" in message and "layers.1.attention.wo.bias" in message


# -- per-request seeds -----------------------------------------------------------------------------


def test_sampled_text_does_not_depend_on_batch_company(tiny):
    lm = ScratchLanguageModel(str(tiny), batch_size=4)
    kwargs = {"max_gen_toks": 16, "do_sample": True, "temperature": 1.0, "top_p": 0.95}
    request = GenerateRequest(prompt="The quick brown", seed=11, **kwargs)
    others = [GenerateRequest(prompt=p, seed=s, **kwargs)
              for p, s in (("To be, or", 3), ("A journey of a thousand miles", 4), ("It was", 5))]
    alone = lm.generate([request])[0]
    batched = lm.generate([others[0], request, *others[1:]])
    assert batched[1] == alone and alone
    assert lm.generate(others + [request])[-1] == alone  # another position in the batch
    # seeds matter: several seeds give more than one text
    texts = {lm.generate([GenerateRequest(prompt="The quick brown", seed=s, **kwargs)])[0] for s in range(6)}
    assert len(texts) > 1


# -- contexts longer than the model ----------------------------------------------------------------


def test_long_prompts_keep_their_end_and_are_counted(tiny, caplog):
    lm = ScratchLanguageModel(str(tiny), max_length=32)
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 6)
    tokens = lm.encode_context(long_prompt)
    assert len(tokens) > 32
    request = GenerateRequest(prompt=long_prompt, max_gen_toks=8)
    with caplog.at_level(logging.WARNING):
        out = lm.generate([request, request])
    assert lm.truncated["generate_until"] == 2
    assert sum("do not fit the model's 32 tokens" in r.getMessage() for r in caplog.records) == 1
    expected = lm.tok_decode(lm.generate_ids([tokens[-(32 - 8):]], request))[0]
    assert out == [expected, expected]
    # loglikelihood: the context is cut from the left to max_length + 1 tokens in all
    (logprob, _), = lm.loglikelihood([(long_prompt, " dog")])
    assert lm.truncated["loglikelihood"] == 1
    ctx, cont = lm.encode_pair(long_prompt, " dog")
    (direct, _), = lm.score_token_batch([(ctx[-(33 - len(cont)):], cont)])
    assert logprob == direct
