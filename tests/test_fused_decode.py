"""The fused decode step (harness/models/scratch/fused_decode.py, kernels/decode_step.c) against
the torch path of the same model: logits within 1e-4 relative (float32, other summation order),
greedy tokens equal; and the fallback where it cannot run."""

from __future__ import annotations

import pytest
import torch
from test_scratch import scratch_from_dir, tiny_hf_config, tiny_hf_model

from harness.models.scratch import cpu_quant_kernel, fused_decode
from harness.models.scratch.generate import Job, generate_continuous
from harness.models.scratch.model import Transformer
from harness.models.scratch.packing import apply_kernels, choose_kernels
from harness.models.scratch.quant import quantize_model

needs_kernels = pytest.mark.skipif(fused_decode.load().lib is None,
                                   reason=f"no fused decode kernels here: {fused_decode.load().reason}")


def _tiny(tmp_path_factory, arch: str = "llama", **overrides) -> Transformer:
    folder = tmp_path_factory.mktemp(f"tiny-fused-{arch}")
    tiny_hf_model(tiny_hf_config(arch, **overrides)).save_pretrained(str(folder))
    model = scratch_from_dir(folder)
    apply_kernels(model, choose_kernels("cpu", torch.float32))
    return model


@pytest.fixture(scope="module", params=["llama", "qwen2"], ids=["llama-gqa", "qwen2-bias"])
def tiny(request, tmp_path_factory) -> Transformer:
    # 4 query heads over 2 kv heads; qwen2 has biases on q, k and v
    return _tiny(tmp_path_factory, request.param)


def _step_both(model: Transformer, tokens: torch.Tensor, positions: torch.Tensor,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step through the torch path and through the fused one, from the same cache."""
    saved = [(layer.attention.cache.k.clone(), layer.attention.cache.v.clone()) for layer in model.layers]
    fused, model.fused = model.fused, None
    with torch.inference_mode():
        torch_logits = model.head(model.forward_rows(tokens, positions, rows)[:, -1])
        torch_cache = [(layer.attention.cache.k.clone(), layer.attention.cache.v.clone()) for layer in model.layers]
        for layer, (k, v) in zip(model.layers, saved):
            layer.attention.cache.k.copy_(k)
            layer.attention.cache.v.copy_(v)
        model.fused = fused
        fused_logits = model.decode_logits(tokens, positions, rows)  # one C call with the head (whole)
    for layer, (k, v) in zip(model.layers, torch_cache):  # the same keys and values written
        assert torch.allclose(layer.attention.cache.k, k, atol=1e-5, rtol=1e-4)
        assert torch.allclose(layer.attention.cache.v, v, atol=1e-5, rtol=1e-4)
    return torch_logits, fused_logits


@needs_kernels
@pytest.mark.parametrize("whole", [True, False], ids=["one-call", "call-per-step"])
def test_a_decode_step_gives_the_torch_logits(tiny, whole):
    """Three cache rows at positions 3, 9 and 17 (after prefilling each row's own prompt), then a
    step over a subset of rows in another order; float32 weights run the whole stack in one call,
    and the call-per-step path (quantized weights take it) gives the same."""
    assert fused_decode.attach(tiny) is None and tiny.fused is not None and tiny.fused.whole
    tiny.fused.whole = whole
    try:
        tiny.setup_cache(3, 32)
        with torch.inference_mode():
            for row, n in enumerate((3, 9, 17)):
                prompt = torch.arange(5, 5 + n)[None]
                tiny.forward_rows(prompt, torch.arange(n)[None], torch.tensor([row]))
        tokens, positions = torch.tensor([[7], [11], [40]]), torch.tensor([[3], [9], [17]])
        expected, got = _step_both(tiny, tokens, positions)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
        assert torch.equal(got.argmax(-1), expected.argmax(-1))
        expected, got = _step_both(tiny, torch.tensor([[8], [12]]), torch.tensor([[10], [4]]), torch.tensor([1, 0]))
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    finally:
        tiny.clear_cache()
        tiny.fused = None


@needs_kernels
def test_continuous_generation_is_token_for_token_the_torch_one(tiny):
    prompts = [[5, 9, 30, 41, 7, 8, 100, 3, 77], [12, 40], [3, 4, 5, 6], [44]]
    jobs = [Job(p, n) for p, n in zip(prompts, (12, 6, 9, 14))]
    tiny.fused = None
    expected = generate_continuous(tiny, jobs, 2)
    fused_decode.attach(tiny)
    try:
        assert generate_continuous(tiny, jobs, 2) == expected
    finally:
        tiny.fused = None


@needs_kernels
def test_the_head_over_a_few_rows_matches_the_linear(tiny):
    fused_decode.attach(tiny)
    try:
        hidden = torch.randn(5, tiny.config.dim)
        expected = torch.nn.functional.linear(hidden, tiny.output.weight)
        assert torch.allclose(tiny.head(hidden), expected, rtol=1e-4, atol=1e-4)
        many = torch.randn(fused_decode.MAX_ROWS + 1, tiny.config.dim)  # past MAX_ROWS: the torch product
        assert torch.allclose(tiny.head(many), torch.nn.functional.linear(many, tiny.output.weight), atol=1e-5)
    finally:
        tiny.fused = None


@needs_kernels
def test_quantized_weights_keep_their_kernels_inside_the_fused_step(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-fused-q")
    tiny_hf_model(tiny_hf_config()).save_pretrained(str(folder))
    model = scratch_from_dir(folder)
    quantize_model(model, "int8")
    apply_kernels(model, choose_kernels("cpu", torch.float32))
    assert fused_decode.attach(model) is None and not model.fused.whole
    jobs = [Job([5, 9, 30, 41], 10), Job([3, 4], 7)]
    fused = generate_continuous(model, jobs, 2)
    model.fused = None
    assert generate_continuous(model, jobs, 2) == fused


def test_layers_it_has_no_step_for_keep_the_torch_path(tmp_path_factory):
    windowed = _tiny(tmp_path_factory, "mistral", sliding_window=5)
    assert "sliding-window" in fused_decode.attach(windowed) and windowed.fused is None
    assert fused_decode.attach(_tiny(tmp_path_factory), enabled=False) == "turned off"
    bf16 = _tiny(tmp_path_factory).to(torch.bfloat16)
    assert "float32" in fused_decode.unsupported(bf16)


def test_without_a_compiler_the_torch_path_runs(monkeypatch, tmp_path, tmp_path_factory):
    monkeypatch.setenv(cpu_quant_kernel.CC_ENV, "/nonexistent/cc")
    monkeypatch.setenv(cpu_quant_kernel.CACHE_ENV, str(tmp_path))
    fused_decode.load.cache_clear()
    try:
        model = _tiny(tmp_path_factory)
        reason = fused_decode.attach(model)
        assert model.fused is None and ("no C compiler" in reason or "AVX2" in reason)
        assert len(generate_continuous(model, [Job([5, 9, 30], 6)], 1)[0]) == 6
    finally:
        fused_decode.load.cache_clear()


@needs_kernels
def test_the_library_is_compiled_once_into_the_kernel_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu_quant_kernel.CACHE_ENV, str(tmp_path))
    fused_decode.load.cache_clear()
    try:
        assert fused_decode.load().lib is not None
        (built,) = tmp_path.iterdir()
        assert built.name.startswith("decode_step-") and built.suffix == ".so"
    finally:
        fused_decode.load.cache_clear()


@pytest.fixture(scope="module")
def smollm2():
    from harness.models.scratch import ScratchLanguageModel

    return ScratchLanguageModel("smollm2-135m", batch_size=4)


@needs_kernels
def test_smollm2_greedy_text_is_the_same_with_and_without_the_fused_step(smollm2):
    from harness.requests import GenerateRequest

    from harness.models.scratch import hugepages

    assert smollm2.decode_kernels == "avx2-fused"
    assert smollm2.huge_page_bytes == 0  # the weights move before the first generation, not at load
    requests = [GenerateRequest(prompt=p, max_gen_toks=24) for p in
                ("The history of the printing press begins", "Water boils at", "My favourite colour is")]
    fused = smollm2.generate(requests)
    if hugepages.available() is None:
        assert smollm2.huge_page_bytes > 530_000_000  # every float32 matrix of SmolLM2-135M (norms stay)
    step, smollm2.model.fused = smollm2.model.fused, None
    try:
        assert smollm2.generate(requests) == fused
    finally:
        smollm2.model.fused = step
    assert sum(len(t) for t in fused) > 60


# -- the weights on huge pages (hugepages.py) ---------------------------------------------------

def test_weights_moved_to_huge_pages_keep_their_values_and_ties(tmp_path_factory, monkeypatch):
    from harness.models.scratch import hugepages

    if hugepages.available() is not None:
        pytest.skip(f"no transparent huge pages here: {hugepages.available()}")
    monkeypatch.setattr(hugepages, "MIN_BYTES", 1)  # the tiny model's tensors are all small
    folder = tmp_path_factory.mktemp("tiny-huge")
    tiny_hf_model(tiny_hf_config(tie_word_embeddings=True)).save_pretrained(str(folder))
    model = scratch_from_dir(folder)
    assert model.output.weight is model.tok_embeddings.weight
    before = {name: t.clone() for name, t in model.state_dict().items()}
    ids = torch.tensor([[5, 9, 30, 41, 7]])
    with torch.inference_mode():
        expected = model.head(model(ids, torch.arange(5)))
    moved = hugepages.move_weights(model)
    assert moved >= sum(t.numel() * t.element_size() for t in before.values()) - model.output.weight.numel() * 4
    assert model.output.weight is model.tok_embeddings.weight  # still one tensor
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name
    addresses = sorted(p.data_ptr() for p in model.parameters())
    assert addresses[-1] - addresses[0] < moved  # all in one mapping
    with torch.inference_mode():
        assert torch.equal(model.head(model(ids, torch.arange(5))), expected)


def test_huge_pages_can_be_turned_off(monkeypatch, tmp_path_factory):
    from harness.models.scratch import hugepages

    monkeypatch.setenv(hugepages.ENV, "0")
    assert hugepages.available() == f"{hugepages.ENV}=0"
    assert hugepages.move_weights(_tiny(tmp_path_factory)) == 0


# -- large tensors on their own memory maps (torch_lm.large_tensors_mapped) ---------------------

def test_large_tensors_get_their_own_maps_unless_turned_off(monkeypatch):
    import platform

    from harness.errors import HarnessError
    from harness.models import torch_lm

    try:
        monkeypatch.setenv(torch_lm.MMAP_THRESHOLD_ENV, "0")
        torch_lm.large_tensors_mapped.cache_clear()
        assert torch_lm.large_tensors_mapped() == 0
        monkeypatch.setenv(torch_lm.MMAP_THRESHOLD_ENV, "lots")
        torch_lm.large_tensors_mapped.cache_clear()
        with pytest.raises(HarnessError, match=torch_lm.MMAP_THRESHOLD_ENV):
            torch_lm.large_tensors_mapped()
        monkeypatch.delenv(torch_lm.MMAP_THRESHOLD_ENV)
        torch_lm.large_tensors_mapped.cache_clear()
        expected = 16 << 20 if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else 0
        assert torch_lm.large_tensors_mapped() == expected
    finally:
        torch_lm.large_tensors_mapped.cache_clear()


@needs_kernels
def test_new_caches_and_moved_weights_are_read_at_their_new_addresses(tiny, monkeypatch):
    """Each generation allocates new caches and the first one moves the weights: the step must
    never keep an old address (it would write into freed memory)."""
    from harness.models.scratch import hugepages

    fused_decode.attach(tiny)
    try:
        jobs = [Job([5, 9, 30, 41], 6), Job([3, 4], 9)]
        expected = generate_continuous(tiny, jobs, 2)
        for slots, length in ((2, 16), (3, 40), (1, 8)):
            tiny.setup_cache(slots, length)
            k, v = tiny.fused._cache_pointers()
            assert k.tolist() == [layer.attention.cache.k.data_ptr() for layer in tiny.layers]
            assert v.tolist() == [layer.attention.cache.v.data_ptr() for layer in tiny.layers]
            tiny.clear_cache()
        if hugepages.available() is None:
            monkeypatch.setattr(hugepages, "MIN_BYTES", 1)
            before = tiny.fused._layer_array()[0].wqkv
            assert hugepages.move_weights(tiny) > 0
            assert tiny.fused._layer_array()[0].wqkv != before
        assert generate_continuous(tiny, jobs, 3) == expected
    finally:
        tiny.fused = None
