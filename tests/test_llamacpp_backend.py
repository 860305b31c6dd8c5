"""The llamacpp backend against the hf backend on the same SmolLM2 GGUF file.

llama.cpp computes with the Q4_1 weights as stored (activations quantized to 8 bits for the dot
products, float16 KV cache), transformers with the same weights dequantized to float32, so the
log-likelihoods differ by a small, measured amount. Measured here (llama-cpp-python 0.3.36,
transformers 5.24) on the first 30 knowledge_mc questions, 120 (context, choice) pairs: |Δ logprob|
median 0.126, max 1.01 nats (a 1-token choice); 120/120 greedy flags equal; 28/30 questions pick
the same choice. Rolling log-likelihood of 8 lm_en documents (~110 tokens each): relative
difference at most 0.7%, per token at most 0.026 nats. The tolerances below are about 2.5x those.
"""

from __future__ import annotations

import json
import statistics

import pytest

from harness.requests import GenerateRequest
from tests.conftest import REPO

pytestmark = pytest.mark.slow

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def llamacpp():
    from harness.models import load_model

    lm = load_model("llamacpp:smollm2-135m")
    yield lm
    lm.close()


def knowledge_pairs(n_questions: int) -> list[tuple[str, str]]:
    pairs = []
    lines = (REPO / "tasks" / "multiple_choice" / "knowledge.jsonl").read_text().splitlines()[:n_questions]
    for doc in map(json.loads, lines):
        pairs += [(f"Question: {doc['question']}\nAnswer:", f" {choice}") for choice in doc["choices"]]
    return pairs


def test_identity_and_tokenizer_match_hf(llamacpp, hf_smollm2):
    info = llamacpp.info
    assert (info.backend, info.spec, info.dtype, info.n_params) == ("llamacpp", "llamacpp:smollm2-135m", "Q4_1",
                                                                    hf_smollm2.info.n_params)
    assert info.max_length == 8192 and llamacpp.prefix_token_id == hf_smollm2.prefix_token_id == 1
    assert len(llamacpp.fingerprint) == 64 and llamacpp.fingerprint != hf_smollm2.fingerprint
    for text in ["The capital of France is Paris.", "日本語のテキスト", "  spaces\tand\n\nnewlines",
                 "<|im_start|>user\nHi<|im_end|>\n"]:
        assert llamacpp.tok_encode(text) == hf_smollm2.tok_encode(text)
        assert llamacpp.encode_context(text) == hf_smollm2.encode_context(text)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    assert llamacpp.apply_chat_template(messages) == hf_smollm2.apply_chat_template(messages)


def test_loglikelihood_close_to_hf(llamacpp, hf_smollm2):
    pairs = knowledge_pairs(10)
    ours, theirs = llamacpp.loglikelihood(pairs), hf_smollm2.loglikelihood(pairs)
    gaps = [abs(a[0] - b[0]) for a, b in zip(ours, theirs)]
    assert statistics.median(gaps) < 0.3 and max(gaps) < 2.5, gaps  # measured: 0.126 and 1.01 over 120 pairs
    assert sum(a[1] == b[1] for a, b in zip(ours, theirs)) >= len(pairs) - 1
    # the FIELD-NOTES example, where echo logprobs gave -10.46: raw logits give about -0.41
    (of,) = llamacpp.loglikelihood([("The capital", " of")])
    (hf_of,) = hf_smollm2.loglikelihood([("The capital", " of")])
    assert abs(of[0] - hf_of[0]) < 0.3 and of[0] > -2


def test_scores_do_not_depend_on_company(llamacpp):
    """A request's score is the same alone and among others (no prefix reuse across requests)."""
    pairs = knowledge_pairs(2)
    together = llamacpp.loglikelihood(pairs)
    alone = [llamacpp.loglikelihood([pair])[0] for pair in reversed(pairs)][::-1]
    assert together == alone


def test_rolling_close_to_hf(llamacpp, hf_smollm2):
    lines = (REPO / "tasks" / "language_modelling" / "lm_en.jsonl").read_text().splitlines()[:4]
    texts = [json.loads(line)["text"] for line in lines]
    ours, theirs = llamacpp.loglikelihood_rolling(texts), hf_smollm2.loglikelihood_rolling(texts)
    for (a, n), (b, m) in zip(ours, theirs):
        assert n == m
        assert abs(a - b) / abs(b) < 0.02 and abs(a - b) / n < 0.07  # measured: 0.7% and 0.026 per token
    # short windows: every window conditioned as lm-evaluation-harness does, same token counts
    short_ours = llamacpp.loglikelihood_rolling(texts[:1], max_length=32)
    short_theirs = hf_smollm2.loglikelihood_rolling(texts[:1], max_length=32)
    assert short_ours[0][1] == short_theirs[0][1] and abs(short_ours[0][0] - short_theirs[0][0]) / n < 0.07


def test_greedy_generation_with_stops(llamacpp, hf_smollm2):
    requests = [GenerateRequest("The capital of France is", until=(".", "\n"), max_gen_toks=24),
                GenerateRequest("Question: What do bees make?\nAnswer:", until=("\n",), max_gen_toks=12),
                GenerateRequest("Count: 1, 2, 3,", until=(" 6",), max_gen_toks=20)]
    ours = llamacpp.generate(requests)
    assert ours[0] == " Paris" == hf_smollm2.generate(requests[:1])[0]
    assert "\n" not in ours[1] and ours[1].startswith(" Bees make")
    assert ours[2] == " 4, 5,"  # cut before the stop sequence
    # max_gen_toks bounds the output; an empty stop list runs to it
    (long,) = llamacpp.generate([GenerateRequest("Count: 1, 2, 3,", max_gen_toks=5)])
    assert len(llamacpp.tok_encode(long)) <= 5
    # chat: the model ends its turn with EOS, which is not in the text
    prompt = llamacpp.apply_chat_template([{"role": "user", "content": "Say hello."}])
    (reply,) = llamacpp.generate([GenerateRequest(prompt, max_gen_toks=40)])
    assert reply and "<|im_end|>" not in reply


def test_sampling_is_seeded(llamacpp):
    request = GenerateRequest("Once upon a time", max_gen_toks=12, do_sample=True, temperature=1.0, seed=7)
    first, second = llamacpp.generate([request, request])
    assert first == second
    other = llamacpp.generate([GenerateRequest("Once upon a time", max_gen_toks=12, do_sample=True,
                                               temperature=1.0, seed=8)])[0]
    assert other != first


def test_runs_a_task_end_to_end(tmp_path):
    import harness

    results = harness.evaluate(["llamacpp:smollm2-135m"], ["knowledge_mc"],
                               harness.RunOptions(limit=4, output_dir=str(tmp_path), use_cache=False))
    (evaluation,) = results.to_dict()["evaluations"]
    assert evaluation["model"]["backend"] == "llamacpp" and evaluation["model"]["dtype"] == "Q4_1"
    assert evaluation["tasks"]["knowledge_mc"]["metrics"]["acc"]["n"] == 4


def test_not_a_gguf_or_a_corrupt_one_is_one_line(tmp_path):
    from harness.errors import HarnessError
    from harness.models import load_model

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HarnessError, match="runs GGUF files"):
        load_model(f"llamacpp:{tmp_path}")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(HarnessError, match="could not load"):
        load_model(f"llamacpp:{corrupt}")
