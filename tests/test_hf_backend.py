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
