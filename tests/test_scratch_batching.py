"""Continuous batching in the scratch decoder: a fixed number of KV-cache slots, a finished row's
slot refilled at once, per-request seeds. References: the same requests generated one at a time,
and greedy decoding by full recomputation without any KV cache (an independent path)."""

from __future__ import annotations

import pytest
import torch
from test_scratch import VOCAB, scratch_from_dir, tiny_hf_config, tiny_hf_model, write_tokenizer

from harness.models.scratch import ScratchLanguageModel
from harness.models.scratch.generate import Job, Sampling, generate_continuous
from harness.models.scratch.model import Transformer
from harness.requests import GenerateRequest


@pytest.fixture(scope="module", params=[{}, {"sliding_window": 5}], ids=["llama", "mistral-window"])
def tiny_model(request, tmp_path_factory) -> Transformer:
    folder = tmp_path_factory.mktemp("tiny-batching")
    arch = "mistral" if request.param else "llama"
    tiny_hf_model(tiny_hf_config(arch, **request.param)).save_pretrained(str(folder))
    return scratch_from_dir(folder)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> ScratchLanguageModel:
    folder = tmp_path_factory.mktemp("tiny-batching-lm")
    tiny_hf_model(tiny_hf_config()).save_pretrained(str(folder))
    write_tokenizer(folder)
    return ScratchLanguageModel(str(folder), batch_size=4)


def recomputed_greedy(model: Transformer, prompt: list[int], max_new: int, eos: tuple[int, ...] = (),
                      stop_after: int | None = None) -> list[int]:
    """Greedy decoding with no KV cache: the whole sequence through the model for every token."""
    tokens, out = list(prompt), []
    with torch.inference_mode():
        for _ in range(max_new):
            ids = torch.tensor([tokens])
            token = int(model.head(model(ids, torch.arange(len(tokens)))[0, -1]).argmax())
            if token in eos:
                break
            out.append(token)
            tokens.append(token)
            if stop_after is not None and len(out) == stop_after:
                break
    return out


PROMPTS = [[5, 9, 30, 41, 7, 8, 100, 3, 77], [12, 40], [3, 4, 5, 6], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71],
           [9, 9], [101, 102, 103, 104, 105], [44]]
BUDGETS = [12, 3, 9, 5, 14, 1, 7]


def test_continuous_batch_equals_one_at_a_time_and_recomputation(tiny_model):
    """7 prompts of 1 to 12 tokens, budgets of 1 to 14 tokens and a stop rule, through 3 slots:
    token for token what each gives alone and what full recomputation gives."""
    jobs = [Job(p, n) for p, n in zip(PROMPTS, BUDGETS)]
    stop = lambda job, tokens: job == 2 and len(tokens) == 4  # noqa: E731
    batched = generate_continuous(tiny_model, jobs, 3, should_stop=stop)
    alone = [generate_continuous(tiny_model, [job], 1, should_stop=lambda _, t, i=i: stop(i, t))[0]
             for i, job in enumerate(jobs)]
    reference = [recomputed_greedy(tiny_model, p, n, stop_after=4 if i == 2 else None)
                 for i, (p, n) in enumerate(zip(PROMPTS, BUDGETS))]
    assert batched == alone == reference
    assert [len(x) for x in batched] == [12, 3, 4, 5, 14, 1, 7]
    # an EOS token ends a row and is not returned
    eos = reference[0][4]
    with_eos = generate_continuous(tiny_model, jobs, 2, eos_ids=[eos])
    assert with_eos == [recomputed_greedy(tiny_model, p, n, eos=(eos,)) for p, n in zip(PROMPTS, BUDGETS)]
    assert with_eos[0] == reference[0][: reference[0].index(eos)]


def test_a_finished_row_is_refilled_at_once(tiny_model, monkeypatch):
    """One 30-token answer beside four 5-token ones in 2 slots: the short ones pass through the
    second slot while the long one decodes, so the batch takes the long answer's 29 decode steps
    (a static batch of 2 would take 29 + 4 + 4)."""
    long_job, short = Job([7, 8, 9, 10, 11, 12], 30), [Job([20 + i, 30 + i], 5) for i in range(4)]
    calls: list[int] = []
    forward_rows = tiny_model.forward_rows

    def counted(tokens, positions, rows=None):
        calls.append(tokens.shape[1])
        return forward_rows(tokens, positions, rows)

    monkeypatch.setattr(tiny_model, "forward_rows", counted)
    finished: list[int] = []
    out = generate_continuous(tiny_model, [*short, long_job], 2, on_done=lambda job, _: finished.append(job))
    assert [len(x) for x in out] == [5, 5, 5, 5, 30]
    assert calls.count(1) == 29  # decode steps (one token per row); prefills have 2 or 6 tokens
    assert len(calls) == 29 + 4  # the first prefill fills both slots, then one per refilled slot
    assert finished == [0, 1, 2, 3, 4]  # the short answers come out as they finish
    monkeypatch.undo()
    assert out == [generate_continuous(tiny_model, [job], 1)[0] for job in [*short, long_job]]


def test_sampled_rows_depend_only_on_their_own_seed(tiny_model):
    """Sampled jobs (each with its own settings and seed) among greedy ones: the same tokens with 1,
    2 or 4 slots and in any order of the other jobs."""
    samplings = [Sampling(greedy=False, temperature=1.0, top_p=0.9), Sampling(),
                 Sampling(greedy=False, temperature=0.7, top_k=20, repetition_penalty=1.3),
                 Sampling(repetition_penalty=1.2), Sampling(greedy=False, temperature=1.5)]
    jobs = [Job(p, 10, s, seed=100 + i) for i, (p, s) in enumerate(zip(PROMPTS, samplings))]
    runs = {slots: generate_continuous(tiny_model, jobs, slots) for slots in (1, 2, 4)}
    assert runs[1] == runs[2] == runs[4]
    order = [3, 0, 4, 2, 1]
    shuffled = generate_continuous(tiny_model, [jobs[i] for i in order], 2)
    assert [shuffled[order.index(i)] for i in range(len(jobs))] == runs[1]
    # the seed is what decides: another seed, another draw
    reseeded = generate_continuous(tiny_model, [Job(j.prompt, 10, j.sampling, seed=j.seed + 1) for j in jobs], 2)
    assert any(reseeded[i] != runs[1][i] for i in (0, 2, 4))


def test_backend_batches_mixed_settings_and_reports_answers_as_they_finish(tiny_lm):
    """Through the backend: requests of different settings share the slots; texts equal each
    request alone (batch size 1); on_answer hears every request once, with its final text."""
    kwargs = [{"max_gen_toks": 12}, {"max_gen_toks": 4, "until": (" ",)},
              {"max_gen_toks": 10, "do_sample": True, "temperature": 1.0, "top_p": 0.95, "seed": 5},
              {"max_gen_toks": 16, "repetition_penalty": 1.3}, {"max_gen_toks": 8, "do_sample": True, "temperature": 0.8, "seed": 9},
              {"max_gen_toks": 6}]
    prompts = ["The quick brown", "To be, or", "A journey of a thousand miles", "It was", "All happy", "To"]
    requests = [GenerateRequest(prompt=p, **k) for p, k in zip(prompts, kwargs)]
    heard: list[tuple[int, str]] = []
    tiny_lm.batch_size = 3
    batched = tiny_lm.generate(requests, on_answer=lambda i, text: heard.append((i, text)))
    tiny_lm.batch_size = 1
    alone = [tiny_lm.generate([r])[0] for r in requests]
    tiny_lm.batch_size = 4
    assert batched == alone and sorted(heard) == list(enumerate(batched))
    assert " " not in batched[1]  # cut before its stop sequence


# -- the real SmolLM2-135M-Instruct ------------------------------------------------------------------


def test_a_prefix_every_prompt_shares_runs_once_and_changes_no_token(tiny_model, monkeypatch):
    """Prompts behind one 20-token block (a few-shot prefix): the block runs once and its keys and
    values are copied into each slot; every answer is token for token what recomputation gives."""
    block = [(7 * i + 3) % (VOCAB - 1) + 1 for i in range(20)]
    prompts = [block + tail for tail in ([5, 9], [12, 40, 41], [3], [60, 61, 62, 63], [9, 9])]
    budgets = [6, 4, 8, 5, 7]
    seen: list[int] = []
    real = tiny_model.forward_rows
    monkeypatch.setattr(tiny_model, "forward_rows", lambda tokens, *a, **k: seen.append(tokens.numel()) or real(tokens, *a, **k))
    jobs = [Job(p, n) for p, n in zip(prompts, budgets)]
    shared = generate_continuous(tiny_model, jobs, 2)
    shared_tokens = sum(seen)
    seen.clear()
    unshared = generate_continuous(tiny_model, jobs, 2, share_prefix=False)
    assert shared == unshared == [recomputed_greedy(tiny_model, p, n) for p, n in zip(prompts, budgets)]
    assert shared_tokens <= sum(seen) - 4 * 20 + 4  # the block once (rows pad to the longest rest)


@pytest.fixture(scope="module")
def smollm2() -> ScratchLanguageModel:
    return ScratchLanguageModel("smollm2-135m", batch_size=4)


QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "How many legs does a spider have?",
             "Write one sentence about the sea.", "What is two plus two?", "Give me a synonym for happy.",
             "Why is the sky blue? Explain it to a child in a few words, please.", "Tell me a fun fact about cats."]


@pytest.mark.slow
def test_smollm2_continuous_greedy_equals_one_at_a_time(smollm2):
    """9 chat and plain prompts (14 to about 40 tokens), budgets of 6 to 24 tokens, stop strings,
    through 4 slots: the same texts as each request alone, and for two of them the same tokens as
    greedy recomputation without a KV cache."""
    chats = [smollm2.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    plain = "The old lighthouse keeper climbed the spiral stairs every evening at dusk"
    budgets = [16, 6, 24, 12, 8, 20, 12, 10]
    until = [("\n",), (), (".",), ("\n",), (), (",", "\n"), (), ("!",)]
    requests = [GenerateRequest(prompt=c, max_gen_toks=n, until=u) for c, n, u in zip(chats, budgets, until)]
    requests.append(GenerateRequest(prompt=plain, max_gen_toks=16))
    batched = smollm2.generate(requests)
    smollm2.batch_size = 1
    try:
        alone = [smollm2.generate([r])[0] for r in requests]
    finally:
        smollm2.batch_size = 4
    assert batched == alone
    assert sum(len(t) for t in batched) > 150  # real answers, not early stops
    eos = tuple(smollm2._eos_ids())
    for r in (requests[2], requests[-1]):
        prompt = smollm2.encode_context(r.prompt)
        expected = recomputed_greedy(smollm2.model, prompt, r.max_gen_toks, eos=eos)
        assert smollm2.generate_ids([prompt], GenerateRequest(prompt="", max_gen_toks=r.max_gen_toks))[0] == expected


@pytest.mark.slow
def test_smollm2_few_shot_generation_is_the_same_with_the_shared_prefix(smollm2):
    """Eight 3-shot questions (the block is about 90 tokens): the texts generated with the block
    run once equal those of a full prefill per prompt."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in (
        ("What colour is grass?", "green"), ("How many days are in a week?", "seven"),
        ("What do bees make?", "honey")))
    requests = [GenerateRequest(prompt=f"{shots}Question: {q}\nAnswer:", max_gen_toks=10, until=("\n",))
                for q in QUESTIONS]
    shared = smollm2.generate(requests)
    smollm2.prefix_sharing = False
    try:
        unshared = smollm2.generate(requests)
    finally:
        smollm2.prefix_sharing = True
    assert shared == unshared and sum(len(t) for t in shared) > 20


@pytest.mark.slow
def test_smollm2_sampled_texts_do_not_depend_on_batch_size_or_company(smollm2):
    kwargs = {"max_gen_toks": 12, "do_sample": True, "temperature": 0.9, "top_p": 0.95}
    requests = [GenerateRequest(prompt=smollm2.apply_chat_template([{"role": "user", "content": q}]), seed=40 + i, **kwargs)
                for i, q in enumerate(QUESTIONS[:5])]
    four = smollm2.generate(requests)
    smollm2.batch_size = 1
    try:
        one = smollm2.generate(requests)
    finally:
        smollm2.batch_size = 4
    reversed_order = smollm2.generate(requests[::-1])[::-1]
    assert four == one == reversed_order
    assert len(set(four)) == len(four)  # each request its own draw


def test_streaming_hears_every_token_the_last_one_too(tiny_lm):
    """stream_token_ids (harness bench's hook) calls on_token once per new token of each row,
    including the one that reaches max_new_tokens."""
    heard: list[tuple[int, int]] = []
    out = tiny_lm.stream_token_ids([[1, 2, 3], [4, 5]], 4, lambda row, token: heard.append((row, token)))
    assert [len(row) for row in out] == [4, 4]
    for row in (0, 1):
        assert [t for r, t in heard if r == row] == out[row]
