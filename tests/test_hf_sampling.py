"""Sampled generation in the transformers backend: each request draws from its own generator, so
batched sampling is reproducible and independent of the batch, on the real SmolLM2 weights."""

import dataclasses

import pytest

from harness.requests import GenerateRequest

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "How many legs does a spider have?",
             "Write one sentence about the sea.", "What is two plus two?", "Give me a synonym for happy."]


def sampled_requests(model, **kwargs) -> list[GenerateRequest]:
    settings = {"max_gen_toks": 10, "do_sample": True, "temperature": 0.9, "top_p": 0.95, "top_k": 40,
                "until": ("\n",), **kwargs}
    return [GenerateRequest(model.apply_chat_template([{"role": "user", "content": q}]), seed=40 + i, **settings)
            for i, q in enumerate(QUESTIONS[:4])]


def test_sampled_texts_do_not_depend_on_batch_size_or_company(hf_smollm2):
    requests = sampled_requests(hf_smollm2, repetition_penalty=1.2)
    hf_smollm2.batch_size = 1
    try:
        one = hf_smollm2.generate(requests)
        hf_smollm2.batch_size = 4
        four = hf_smollm2.generate(requests)
        reversed_order = hf_smollm2.generate(requests[::-1])[::-1]
        alone_again = hf_smollm2.generate([requests[3]])[0]
    finally:
        hf_smollm2.batch_size = 16
    assert one == four == reversed_order and alone_again == one[3]
    assert len(set(one)) == len(one) and all(one)
    reseeded = hf_smollm2.generate([dataclasses.replace(r, seed=r.seed + 1) for r in requests])
    assert reseeded != one


def test_top_k_1_sampling_is_greedy(hf_smollm2):
    """The per-row sampler keeps transformers' warpers: top-k 1 leaves one token to draw."""
    sampled = hf_smollm2.generate(sampled_requests(hf_smollm2, top_k=1, temperature=1.3))
    greedy = hf_smollm2.generate([GenerateRequest(r.prompt, until=r.until, max_gen_toks=r.max_gen_toks)
                                  for r in sampled_requests(hf_smollm2)])
    assert sampled == greedy


def test_sampled_texts_equal_the_scratch_backend(hf_smollm2):
    """Both backends draw row i from a generator seeded by request i's seed, after the same
    warpers: on the same weights (logits within 1e-3) they sample the same texts."""
    from harness.models.scratch import ScratchLanguageModel

    scratch = ScratchLanguageModel("smollm2-135m", batch_size=4)
    requests = sampled_requests(hf_smollm2)
    assert scratch.generate(requests) == hf_smollm2.generate(requests)
