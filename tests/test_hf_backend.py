"""The transformers backend on the real SmolLM2 weights."""

import pytest

from harness.requests import GenerateRequest

pytestmark = pytest.mark.slow

REQUESTS = [
    ("The capital of France is", " Paris"),
    ("Question: How many legs does a spider have?\nAnswer:", " eight"),
    ("", "Hello world, this is a text with no context."),
    ("The cat sat on the ", "mat"),  # the trailing space moves to the continuation
    ("Translate into French: good morning\nFrench:", " bonjour"),
    ("1, 2, 3, 4,", " 5, 6, 7"),
    ("A long context. " * 40, " The end."),
    ("Rain falls from", " clouds in the sky"),
]


def test_scores_do_not_depend_on_batch_size(hf_smollm2):
    model = hf_smollm2
    model.batch_size = 1
    one = model.loglikelihood(REQUESTS)
    rolling_one = model.loglikelihood_rolling([c + x for c, x in REQUESTS])
    model.batch_size = 16
    many = model.loglikelihood(REQUESTS)
    rolling_many = model.loglikelihood_rolling([c + x for c, x in REQUESTS])
    for (a, ga), (b, gb) in zip(one, many):
        assert abs(a - b) <= 1e-4 and ga == gb
    for (a, na), (b, nb) in zip(rolling_one, rolling_many):
        assert abs(a - b) <= 1e-4 and na == nb


def test_long_scoring_runs_the_head_over_chunks_of_positions_with_the_same_numbers(hf_smollm2, monkeypatch):
    """Long rolling windows: the head runs a chunk of scored positions at a time (no [batch,
    positions, vocab] logits), and the scores are transformers' whole-forward ones (observed
    difference 0 to a few 1e-7 per token on this CPU)."""
    from harness.models import hf, torch_lm

    model = hf_smollm2
    text = model.tok_encode(" ".join(c + x for c, x in REQUESTS) * 3)
    pairs = [(text[:1], text[1:]), (text[:40], text[40:300]), (text[:5], text[5:9])]
    monkeypatch.setattr(hf, "SPLIT_HEAD_LOGITS", 1 << 40)
    whole = model.score_token_batch(pairs)
    monkeypatch.setattr(hf, "SPLIT_HEAD_LOGITS", 0)
    monkeypatch.setattr(torch_lm, "HEAD_CHUNK_ELEMENTS", 100 * model.vocab_size)
    assert model._split_head() is not None  # its one-time check runs before the hook below
    head = model.model.get_output_embeddings()
    seen: list[int] = []
    handle = head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    try:
        split = model.score_token_batch(pairs)
    finally:
        handle.remove()
    assert sum(seen) == sum(len(c) for _, c in pairs) and max(seen) <= 100  # scored positions only, chunked
    for (a, ga), (b, gb), (_, cont) in zip(whole, split, pairs):
        assert abs(a - b) <= 1e-5 * len(cont) and ga == gb


def test_out_of_memory_in_a_shared_pass_halves_the_batch_and_counts_once(hf_smollm2, monkeypatch):
    """batch_size=auto: an out-of-memory error in a shared-prefix pass retries the call at half
    the batch, with the same scores, and the failed attempt's tokens are not counted."""
    import torch

    model = hf_smollm2
    question = ("Question: Which of these is a colour? Think of the sky on a clear summer day, of the sea "
                "seen from a cliff, and of the paint a child would choose for both of them.\nAnswer:")
    requests = [(question, f" {c}") for c in ("blue", "green", "a dog", "seven")] * 2  # a prefix worth a pass
    expected = model.loglikelihood(requests)
    before = model.tokens_computed
    model.loglikelihood(requests)
    per_call = model.tokens_computed - before
    real = type(model).score_suffix_batch
    failures = []

    def flaky(self, state, pairs):
        if self.batch_size > 4:
            failures.append(self.batch_size)
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(self, state, pairs)

    monkeypatch.setattr(type(model), "score_suffix_batch", flaky)
    monkeypatch.setattr(model, "auto_batch", True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    saved = model.batch_size
    try:
        before = model.tokens_computed
        got = model.loglikelihood(requests)
        assert failures == [16, 8] and model.batch_size == 4
        assert model.tokens_computed - before == per_call
    finally:
        model.batch_size = saved
    for (a, ga), (b, gb) in zip(expected, got):
        assert abs(a - b) <= 1e-4 and ga == gb


def test_a_head_that_is_not_plain_keeps_the_whole_forward(hf_smollm2, monkeypatch):
    """The body/head split is checked against the whole model first: logits that the model
    scales after its head (as some architectures do) keep transformers' own forward."""
    model = hf_smollm2
    head = model.model.get_output_embeddings()
    assert model._split_head() is not None  # SmolLM2's logits are its head's output
    saved = model.__dict__.pop("_split")
    monkeypatch.setattr(model.model, "get_output_embeddings", lambda: (lambda h: 2 * head(h)))
    try:
        assert model._split_head() is None
    finally:
        model.__dict__["_split"] = saved


def test_context_continuation_split_follows_lm_evaluation_harness(hf_smollm2):
    model = hf_smollm2
    context, continuation = model.encode_pair("The cat sat on the ", "mat")
    assert model.tokenizer.decode(context) == "The cat sat on the"
    assert model.tokenizer.decode(continuation) == " mat"
    whole = model.tok_encode("The cat sat on the mat", add_special_tokens=True)
    assert context + continuation == whole
    # an empty context is conditioned on the prefix token (BOS if the tokenizer has one)
    assert model.encode_pair("", "Hi")[0] == [model.prefix_token_id]


def test_bos_added_once_as_the_tokenizer_says(hf_smollm2):
    model = hf_smollm2
    chat = model.apply_chat_template([{"role": "user", "content": "hi"}])
    ids = model.encode_context(chat)
    assert ids.count(model.tokenizer.bos_token_id) == chat.count(model.tokenizer.bos_token)


def test_greedy_generation_stops_and_is_batch_independent(hf_smollm2):
    model = hf_smollm2
    reqs = [GenerateRequest("The capital of France is", until=("\n", "."), max_gen_toks=16),
            GenerateRequest("Count: 1, 2, 3,", until=("\n",), max_gen_toks=8),
            GenerateRequest("Once upon a time there", until=(), max_gen_toks=6)]
    model.batch_size = 1
    single = model.generate(reqs)
    model.batch_size = 8
    batched = model.generate(reqs)
    assert single == batched
    assert "Paris" in single[0] and "." not in single[0] and "\n" not in single[0]
    assert single[1].startswith(" 4")


def test_sampling_is_seeded(hf_smollm2):
    req = GenerateRequest("My favourite colour is", max_gen_toks=8, do_sample=True, temperature=1.0, seed=7)
    first, second = hf_smollm2.generate([req]), hf_smollm2.generate([req])
    other = hf_smollm2.generate([GenerateRequest(req.prompt, max_gen_toks=8, do_sample=True, temperature=1.0, seed=8)])
    assert first == second and first != other


def test_info_and_fingerprint(hf_smollm2):
    info = hf_smollm2.info
    assert info.n_params == 134_515_008 and info.dtype == "float32" and info.max_length == 8192
    assert len(hf_smollm2.fingerprint) == 64


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_a_bad_gguf_file_is_a_one_line_error(tmp_path, content, monkeypatch):
    from harness.errors import HarnessError
    from harness.models.hf import HFLanguageModel
    from harness.models.zoo import ZOO

    monkeypatch.setenv("HARNESS_MODEL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "bad.gguf"
    if content == "garbage":
        path.write_bytes(b"this is not a GGUF file at all\n" * 100)
    else:  # a download cut short: the header and part of the tensor data
        with open(ZOO["smollm2-135m"].path(), "rb") as f:
            path.write_bytes(f.read(4 << 20))
    with pytest.raises(HarnessError) as err:
        HFLanguageModel(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "truncated, corrupt" in message
    assert not list((tmp_path / "cache").rglob("harness-complete.json"))  # nothing half-converted kept
