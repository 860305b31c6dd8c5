"""Quantized weights in the scratch decoder (harness/models/scratch/quant.py).

References: the float32 model on the same GGUF (logits, perplexity), the GGUF file's own Q4_1
blocks (int4 with group 32 must find them again), and the dequantized product F.linear (every
kernel must agree with it; the fallback is that product)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.models.scratch import cpu_quant_kernel, packing, quant
from harness.models.scratch.packing import Linear
from harness.models.scratch.quant import (
    QuantLinear,
    choose_quant_kernel,
    dequantize_int4,
    dequantize_int8,
    parse_quant,
    quantize_int4,
    quantize_int8,
    quantize_model,
    requested_quant_kernels,
)

LM_EN = Path(__file__).resolve().parents[1] / "tasks/language_modelling/lm_en.jsonl"


def quality_text(docs: int = 6) -> str:
    """The first documents of the lm_en task (about 675 SmolLM2 tokens for six)."""
    lines = LM_EN.read_text(encoding="utf-8").splitlines()[:docs]
    return "\n\n".join(json.loads(line)["text"] for line in lines)


def _linear(n: int, k: int, bias: bool = False, seed: int = 0) -> Linear:
    g = torch.Generator().manual_seed(seed)
    lin = Linear(k, n, bias=bias)
    lin.weight = torch.nn.Parameter(torch.randn(n, k, generator=g) * 0.05, requires_grad=False)
    if bias:
        lin.bias = torch.nn.Parameter(torch.randn(n, generator=g), requires_grad=False)
    return lin


# -- arithmetic ---------------------------------------------------------------------------------


def test_int8_rounds_to_nearest_step():
    w = _linear(48, 96).weight
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    err = (dequantize_int8(q, s) - w).abs()
    assert bool((err <= s[:, None] / 2 + 1e-7).all())  # within half a step of each channel


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_rounds_to_nearest_step(group):
    w = _linear(16, 256).weight
    q, sz = quantize_int4(w, group)
    assert sz.shape == (256 // group, 16, 2) and int(q.max()) == 15 and int(q.min()) == 0
    step = sz[..., 0].T.repeat_interleave(group, dim=1)  # [N, K]
    assert bool(((dequantize_int4(q, sz, group) - w).abs() <= step / 2 + 1e-6).all())


def test_int4_group_32_finds_the_gguf_q4_1_blocks_again():
    """SmolLM2's layers are Q4_1 (blocks of 32: w = d q + m); int4 with group 32 re-quantizing the
    dequantized tensor must give back the file's nibbles and the same values."""
    from harness.models.scratch.weights import dequantize, read_gguf

    from harness.models.zoo import ZOO

    gf = read_gguf(ZOO["smollm2-135m"].path())
    t = gf.tensors["blk.3.ffn_down.weight"]
    assert t.type.name == "Q4_1"
    w = dequantize(gf.raw(t), t.type, t.shape)
    q, sz = quantize_int4(w, 32)
    blocks = torch.from_numpy(np.ascontiguousarray(gf.raw(t))).reshape(-1, 20)
    nibbles = torch.cat([blocks[:, 4:] & 0x0F, blocks[:, 4:] >> 4], dim=1).reshape(w.shape)
    assert torch.equal(q, nibbles)
    back = dequantize_int4(q, sz, 32)
    assert float((back - w).abs().max()) <= 1e-6 * float(w.abs().max())


# -- kernels and fallbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "group"), [("int8", None), ("int4", 32), ("int4", 64)])
def test_kernel_agrees_with_the_dequantized_product(scheme, group):
    lin = _linear(96, 128, bias=True)
    kernel = choose_quant_kernel(scheme, group, "cpu", torch.float32, "auto")
    if kernel == "dequant":  # the probe must not fail where the kernel itself runs
        with pytest.raises(RuntimeError):
            QuantLinear(lin, scheme, group, "aten-int8pack" if scheme == "int8" else "aten-int4pack")(torch.randn(1, 128))
    fast = QuantLinear(lin, scheme, group, kernel)
    slow = QuantLinear(lin, scheme, group, "dequant")
    x = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(1))  # 10 rows: the kernel
    ref = F.linear(x, slow.dense_weight(), lin.bias)
    assert torch.allclose(slow(x), ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(fast(x), ref, atol=1e-4, rtol=1e-4), kernel
    assert torch.allclose(fast.dense_weight(), slow.dense_weight(), atol=1e-6), kernel
    many = torch.randn(3, quant.DENSE_ROWS, 128)  # enough rows for the widened GEMM
    assert torch.allclose(fast(many), F.linear(many, slow.dense_weight(), lin.bias), atol=1e-4, rtol=1e-4)
    # the quantization itself costs little on a random matrix: a few percent of the output norm
    assert float((ref - F.linear(x, lin.weight, lin.bias)).norm() / ref.norm()) < (0.01 if scheme == "int8" else 0.1)


# -- the AVX2 kernels (cpu_quant_kernel.py, kernels/quant_gemv.c) -------------------------------

needs_avx2 = pytest.mark.skipif(not cpu_quant_kernel.cpu_has_avx2_fma(), reason="this CPU has no AVX2 + FMA")


@pytest.fixture
def fresh_kernel_probes():
    """Forget the loaded library and the probes' answers before and after a test that changes
    what they would find (environment, CPU flags)."""
    def clear():
        cpu_quant_kernel.load.cache_clear()
        quant.avx2_works.cache_clear()

    clear()
    yield
    clear()


def _dense_and_kernel(scheme: str, n: int, k: int, group: int | None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    if scheme == "int8":
        q, s = quantize_int8(w)
        return dequantize_int8(q, s), lambda x, b: cpu_quant_kernel.int8_matmul(x, q, s, b)
    q, sz = quantize_int4(w, group)
    packed, rows = quant.pack_nibbles(q), cpu_quant_kernel.row_scales(sz)
    return dequantize_int4(q, sz, group), lambda x, b: cpu_quant_kernel.int4_matmul(x, packed, rows, group, b)


@needs_avx2
@pytest.mark.parametrize(("scheme", "n", "k", "group"), [
    ("int8", 37, 100, None),  # K not a multiple of 8 (the scalar tail), N odd
    ("int8", 64, 1536, None),
    ("int4", 37, 192, 32),
    ("int4", 24, 192, 64),
    ("int4", 40, 256, 128),
])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 15])
def test_avx2_kernel_equals_the_dequantized_product(scheme, n, k, group, rows):
    """Reference: F.linear on the dequantized weights. Only the order of the float sums differs
    (int8 applies the channel's scale after the sum, int4 the group's): agreement to float32
    rounding, 5e-6 of the output's largest value (at most 6e-7 observed, and the kernel is as close
    to the float64 product as F.linear itself)."""
    assert cpu_quant_kernel.load().lib is not None, cpu_quant_kernel.load().reason
    dense, kernel = _dense_and_kernel(scheme, n, k, group)
    g = torch.Generator().manual_seed(rows)
    x, bias = torch.randn(rows, k, generator=g), torch.randn(n, generator=g)
    for b in (None, bias):
        ref = F.linear(x, dense, b)
        out = kernel(x, b)
        assert out.shape == (rows, n) and out.dtype == torch.float32
        assert float((out - ref).abs().max()) <= 5e-6 * float(ref.abs().max()), (scheme, rows)
    assert kernel(torch.randn(0, k), None).shape == (0, n)  # no rows: an empty product, not an error


@needs_avx2
def test_avx2_kernel_rejects_what_it_cannot_read():
    dense, _ = _dense_and_kernel("int4", 16, 64, 32)
    q, sz = quantize_int4(dense, 8)  # groups of 8: not a multiple of the kernel's 16
    with pytest.raises(ValueError, match="group"):
        cpu_quant_kernel.int4_matmul(torch.randn(1, 64), quant.pack_nibbles(q), cpu_quant_kernel.row_scales(sz), 8)
    q8, s8 = quantize_int8(dense)
    with pytest.raises(ValueError, match="contiguous"):
        cpu_quant_kernel.int8_matmul(torch.randn(64, 2).T, q8, s8)  # a transposed view
    with pytest.raises(ValueError, match="features"):
        cpu_quant_kernel.int8_matmul(torch.randn(2, 63), q8, s8)


@needs_avx2
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_avx2_kernel_is_the_first_choice_and_matches_the_fallback(scheme):
    group = 32 if scheme == "int4" else None
    kernel = choose_quant_kernel(scheme, group, "cpu", torch.float32, "auto")
    assert kernel == f"avx2-{scheme}"
    assert choose_quant_kernel(scheme, group, "cpu", torch.float32, "fast") == kernel
    assert choose_quant_kernel(scheme, group, "cpu", torch.float32, "fallback") == "dequant"
    assert choose_quant_kernel(scheme, group, "cpu", torch.bfloat16, "auto") == "dequant"
    lin = _linear(48, 128, bias=True)
    fast, slow = QuantLinear(lin, scheme, group, kernel), QuantLinear(lin, scheme, group, "dequant")
    for shape in [(1, 1, 128), (2, 5, 128), (3, quant.DENSE_ROWS, 128)]:  # the last: the dense GEMM
        x = torch.randn(*shape)
        assert torch.allclose(fast(x), slow(x), atol=1e-5, rtol=1e-5), shape


def test_kernel_cache_is_keyed_and_reused(fresh_kernel_probes, monkeypatch, tmp_path):
    """The library lands in $HARNESS_KERNEL_CACHE under a name from the source, compiler and
    flags; a fresh process (here: a cleared load cache) loads that file without compiling."""
    if cpu_quant_kernel.compiler() is None or not cpu_quant_kernel.cpu_has_avx2_fma():
        pytest.skip("no C compiler or no AVX2 + FMA here")
    monkeypatch.setenv(cpu_quant_kernel.CACHE_ENV, str(tmp_path / "kernels"))
    assert cpu_quant_kernel.load().lib is not None, cpu_quant_kernel.load().reason
    (built,) = (tmp_path / "kernels").iterdir()
    assert built.name.startswith("quant_gemv-") and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    cpu_quant_kernel.load.cache_clear()
    assert cpu_quant_kernel.load().lib is not None
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [built.name] and built.stat().st_mtime_ns == stamp
    # a cache folder that cannot be made (here: under a file) compiles into a temporary folder
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(cpu_quant_kernel.CACHE_ENV, str(tmp_path / "a-file" / "kernels"))
    cpu_quant_kernel.load.cache_clear()
    assert cpu_quant_kernel.load().lib is not None, cpu_quant_kernel.load().reason


@pytest.mark.parametrize(("cc", "reason"), [("/nonexistent/cc", "no C compiler"), ("false", "compiling quant_gemv.c failed")])
def test_without_a_compiler_the_old_kernels_give_the_same_numbers(fresh_kernel_probes, monkeypatch, tmp_path,
                                                                  caplog, cc, reason):
    monkeypatch.setenv(cpu_quant_kernel.CC_ENV, cc)
    monkeypatch.setenv(cpu_quant_kernel.CACHE_ENV, str(tmp_path))
    if not cpu_quant_kernel.cpu_has_avx2_fma():
        reason = "no AVX2"
    loaded = cpu_quant_kernel.load()
    assert loaded.lib is None and reason in loaded.reason
    with caplog.at_level("WARNING", logger="harness.models.scratch.quant"):
        kernel = choose_quant_kernel("int8", None, "cpu", torch.float32, "auto")
        choose_quant_kernel("int8", None, "cpu", torch.float32, "auto")  # probed once: one line
    assert kernel in ("aten-int8pack", "dequant")
    assert len(caplog.records) == 1 and reason in caplog.records[0].getMessage()
    lin = _linear(40, 96, bias=True)
    x = torch.randn(3, 96)
    ref = F.linear(x, QuantLinear(lin, "int8", None, "dequant").dense_weight(), lin.bias)
    assert torch.allclose(QuantLinear(lin, "int8", None, kernel)(x), ref, atol=1e-4, rtol=1e-4)


@needs_avx2
def test_a_kernel_that_disagrees_is_not_used(fresh_kernel_probes, monkeypatch, caplog):
    monkeypatch.setattr(cpu_quant_kernel, "int8_matmul", lambda x, q, s, b=None: torch.zeros(x.shape[0], q.shape[0]))
    with caplog.at_level("WARNING", logger="harness.models.scratch.quant"):
        assert not choose_quant_kernel("int8", None, "cpu", torch.float32, "auto").startswith("avx2-")
    assert "disagrees" in caplog.text


def test_a_cpu_without_avx2_never_takes_the_kernel(fresh_kernel_probes, monkeypatch):
    monkeypatch.setattr(packing, "cpu_features", lambda: packing.CpuFeatures("DEFAULT", frozenset({"sse2", "avx"})))
    assert not cpu_quant_kernel.cpu_has_avx2_fma()
    assert "AVX2" in cpu_quant_kernel.load().reason
    for scheme, group in (("int8", None), ("int4", 32)):
        assert not choose_quant_kernel(scheme, group, "cpu", torch.float32, "auto").startswith("avx2-")


@pytest.mark.parametrize("rows", [1, 7, 40])
def test_dynamic_int8_is_per_token_and_agrees_with_its_emulation(rows):
    lin = _linear(80, 96, bias=True)
    kernel = quant.choose_dynamic_kernel("cpu", torch.float32, "auto")
    fast = QuantLinear(lin, "int8-dynamic", None, kernel)
    slow = QuantLinear(lin, "int8-dynamic", None, "dequant")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(rows, 96, generator=g)
    x[-1] *= 50  # an outlier token must not change the other tokens' numbers
    out = fast(x)
    assert torch.allclose(out, slow(x), atol=1e-4, rtol=1e-4), kernel
    alone = torch.cat([fast(x[i : i + 1]) for i in range(rows)])
    assert torch.allclose(out, alone, atol=1e-4, rtol=1e-4)
    exact = F.linear(x, lin.weight, lin.bias)
    assert float((out - exact).norm() / exact.norm()) < 0.03  # 7-bit tokens, int8 weights


def test_int4_rows_the_packing_cannot_hold_take_the_fallback():
    layer = QuantLinear(_linear(40, 64), "int4", 32, "aten-int4pack")  # 40 rows: not a multiple of 16
    assert layer.kernel == "dequant" and layer(torch.randn(1, 64)).shape == (1, 40)


def test_forced_fallback_and_a_kernel_that_fails(monkeypatch):
    monkeypatch.setenv(quant.QUANT_KERNELS_ENV, "fallback")
    assert choose_quant_kernel("int8", None, "cpu", torch.float32, requested_quant_kernels()) == "dequant"
    monkeypatch.delenv(quant.QUANT_KERNELS_ENV)
    # a CPU where the kernel raises: auto falls back, fast says why in one line
    monkeypatch.setattr(quant, "avx2_works", lambda scheme, group=None: False)
    monkeypatch.setattr(quant, "int8pack_works", lambda: False)
    monkeypatch.setattr(quant, "int4pack_works", lambda group: False)
    monkeypatch.setattr(quant, "fbgemm_dynamic_works", lambda: False)
    assert quant.choose_dynamic_kernel("cpu", torch.float32, "auto") == "dequant"
    assert choose_quant_kernel("int8", None, "cpu", torch.float32, "auto") == "dequant"
    assert choose_quant_kernel("int4", 32, "cpu", torch.float32, "auto") == "dequant"
    with pytest.raises(HarnessError, match="quant_kernels=fast"):
        choose_quant_kernel("int4", 32, "cpu", torch.float32, "fast")
    # bfloat16 activations and GPUs take the dequantized product too
    assert choose_quant_kernel("int8", None, "cpu", torch.bfloat16, "auto") == "dequant"


def test_probes_see_a_raising_kernel(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(torch.ops.aten, "_weight_int8pack_mm", broken)
    quant.int8pack_works.cache_clear()
    try:
        assert quant.int8pack_works() is False
    finally:
        monkeypatch.undo()
        quant.int8pack_works.cache_clear()


def test_options_are_checked():
    assert parse_quant(None, None) == ("none", None)
    assert parse_quant("INT4", None) == ("int4", 32)
    assert parse_quant("int4", "64") == ("int4", 64)
    assert parse_quant("int8-dynamic", None) == ("int8-dynamic", None)
    for bad in [("int3", None), ("int4", "48"), ("int8", "32"), ("int4", "x")]:
        with pytest.raises(HarnessError):
            parse_quant(*bad)
    with pytest.raises(HarnessError, match="quant_kernels"):
        requested_quant_kernels("fastest")


def test_quantize_model_replaces_every_linear_and_keeps_the_head_int8():
    model = torch.nn.Module()
    model.layer = torch.nn.Module()
    model.layer.w = _linear(64, 64)
    model.output = _linear(32, 64)
    plan = quantize_model(model, "int4", 32, requested="fallback")
    assert plan.kernels == {"int4": "dequant", "int8": "dequant"}
    assert model.layer.w.scheme == "int4" and model.output.scheme == "int8"
    assert not any(isinstance(m, Linear) for m in model.modules())


# -- the real model -----------------------------------------------------------------------------


def _perplexity_and_logits(lm, ids):
    logits = lm.position_logits(ids).float()
    lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return math.exp(-float(lp.mean())), logits


@pytest.fixture(scope="module")
def float32_reference():
    from harness.models.scratch import ScratchLanguageModel

    lm = ScratchLanguageModel("smollm2-135m")
    ids = [lm.prefix_token_id, *lm.tok_encode(quality_text())]
    ppl, logits = _perplexity_and_logits(lm, ids)
    return lm, ids, ppl, logits


# Measured on SmolLM2-135M over those 675 tokens (perplexity relative to float32's 31.234; cosine
# of each position's logits with float32's): int8 +0.94%, cosine min 0.9913, mean 0.99956;
# int4 (group 32: the file's own Q4_1, only the int8 head differs) +0.22%, 0.99969, 0.99995;
# int8-dynamic +9.1%, 0.899, 0.9932. The bounds leave about 2x margin.
QUALITY = {
    "int8": {"ppl": 0.025, "cos_min": 0.98, "cos_mean": 0.999},
    "int4": {"ppl": 0.01, "cos_min": 0.998, "cos_mean": 0.9998},
    "int8-dynamic": {"ppl": 0.2, "cos_min": 0.8, "cos_mean": 0.985},
}


@pytest.mark.parametrize("scheme", ["int8", "int4", "int8-dynamic"])
def test_quantized_model_is_close_to_float32(float32_reference, scheme):
    from harness.models.scratch import ScratchLanguageModel

    base, ids, ppl0, logits0 = float32_reference
    lm = ScratchLanguageModel("smollm2-135m", quant=scheme)
    assert lm.fingerprint != base.fingerprint
    assert lm.extra_info()["quant"] == scheme and lm.n_params() == base.n_params()
    ppl, logits = _perplexity_and_logits(lm, ids)
    assert abs(ppl / ppl0 - 1) < QUALITY[scheme]["ppl"], (ppl, ppl0)
    cos = F.cosine_similarity(logits, logits0, dim=-1)
    assert float(cos.min()) > QUALITY[scheme]["cos_min"] and float(cos.mean()) > QUALITY[scheme]["cos_mean"]
    # greedy generation runs through the same modules and the KV cache
    prompt = lm.tok_encode("The capital of France is")
    assert len(lm.generate_ids([prompt], _greedy(8))[0]) > 0


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_fallback_model_gives_the_kernel_model_numbers(float32_reference, scheme):
    """Scoring (64 tokens: the dense path) and greedy decode (one token per product: the vector
    kernel) give the fallback's numbers and tokens."""
    from harness.models.scratch import ScratchLanguageModel

    _, ids, _, _ = float32_reference
    fast = ScratchLanguageModel("smollm2-135m", quant=scheme)
    slow = ScratchLanguageModel("smollm2-135m", quant=scheme, quant_kernels="fallback")
    assert slow.extra_info()["quant_kernels"] == ("int4=dequant,int8=dequant" if scheme == "int4" else "int8=dequant")
    if cpu_quant_kernel.cpu_has_avx2_fma() and cpu_quant_kernel.load().lib is not None:
        assert f"{scheme}=avx2-{scheme}" in fast.extra_info()["quant_kernels"]
    assert fast.fingerprint != slow.fingerprint
    a, b = fast.position_logits(ids[:64]).float(), slow.position_logits(ids[:64]).float()
    assert float((a - b).abs().max()) < 1e-3 * float(a.abs().max())
    prompt = fast.tok_encode("The history of the printing press begins in")
    assert fast.generate_ids([prompt], _greedy(16)) == slow.generate_ids([prompt], _greedy(16))


def _greedy(n: int):
    from harness.requests import GenerateRequest

    return GenerateRequest(prompt="", max_gen_toks=n)


def test_quant_options_key_the_cache_and_reach_the_results(tmp_path):
    """On a tiny model folder: each quantization is its own cache key, a float model's key is
    unchanged, a group that does not divide a layer is a one-line error, and the kernel and the
    fallback give the same scores and greedy tokens."""
    from test_scratch import tiny_hf_config, tiny_hf_model, write_tokenizer

    from harness.models.scratch import ScratchLanguageModel

    folder = tmp_path / "tiny"
    tiny_hf_model(tiny_hf_config()).save_pretrained(str(folder))
    write_tokenizer(folder)
    plain = ScratchLanguageModel(str(folder))
    int8 = ScratchLanguageModel(str(folder), quant="int8")
    int4 = ScratchLanguageModel(str(folder), quant="int4")
    slow = ScratchLanguageModel(str(folder), quant="int4", quant_kernels="fallback")
    assert len({m.fingerprint for m in (plain, int8, int4, slow)}) == 4
    assert "quant" not in plain.fingerprint_parts["settings"]
    settings = int4.fingerprint_parts["settings"]
    assert (settings["quant"], settings["group"]) == ("int4", 32)
    assert int4.info.extra["quant_kernels"] == settings["quant_kernels"]
    with pytest.raises(HarnessError, match="group"):
        ScratchLanguageModel(str(folder), quant="int4", group=64)  # the MLP has 96 inputs
    pairs = [([1, 5, 9, 4], [12, 7, 3]), ([1, 8], [20, 21, 22, 23])]
    for (a, _), (b, _) in zip(int4.score_token_batch(pairs), slow.score_token_batch(pairs)):
        assert a == pytest.approx(b, abs=1e-4)
    assert int4.generate_ids([[1, 5, 9]], _greedy(6)) == slow.generate_ids([[1, 5, 9]], _greedy(6))
