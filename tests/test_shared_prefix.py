"""Shared-prefix scoring equals unshared scoring.

The plan (harness/models/shared_prefix.py) is checked on its own, then both in-process backends
score the same requests twice on the real SmolLM2-135M weights, with prefix sharing on and off,
and must agree per request: the same greedy flags and log-probabilities within float32 noise
(the tolerances below name what was observed).
"""

from __future__ import annotations

import pytest

from harness.models.shared_prefix import PrefixNode, plan, run_plan, shared_tokens


def _nodes(node: PrefixNode) -> list[PrefixNode]:
    return [node] + [n for c in node.children for n in _nodes(c)]


def test_plan_shares_the_context_of_each_question_and_nothing_scored():
    few_shot = list(range(100, 160))  # 60 tokens every request starts with
    pairs = []
    for q in range(3):
        question = [200 + q] * 20
        for choice in ([7], [7, 8], [9, 10, 11]):  # one choice a prefix of another; one token alone
            pairs.append((few_shot + question, choice))
    pairs.append(([1, 2, 3], [4]))  # shares nothing
    root = plan(pairs)
    # one node for the few-shot block, under it one per question (its context up to the last token)
    assert [(c.start, c.end) for c in root.children] == [(0, 60)]
    block = root.children[0]
    assert [(c.start, c.end) for c in block.children] == [(60, 79)] * 3
    assert root.items == [len(pairs) - 1] and not block.items
    placed = sorted(i for n in _nodes(root) for i in n.items)
    assert placed == list(range(len(pairs)))  # every request scored exactly once
    for node in _nodes(root)[1:]:  # a prefix never reaches the last context token
        assert all(node.end <= len(pairs[i][0]) - 1 for i in node.items)
    assert shared_tokens(root) == 60 + 3 * 19


def test_plan_skips_prefixes_too_short_to_pay_and_run_plan_keeps_the_order():
    pairs = [([5, 1, 2], [3]), ([5, 9, 9], [3]), ([6, 6], [1])]  # share one token: not worth a pass
    root = plan(pairs)
    assert not root.children and sorted(root.items) == [0, 1, 2]
    calls = []
    out = run_plan(root, pairs, unshared=lambda ps: [len(c) + len(x) for c, x in ps],
                   extend=lambda s, t: calls.append(t), suffixes=lambda s, ps: [])
    assert out == [4, 4, 3] and not calls


def test_plan_walks_the_tree_with_each_prefix_once():
    ctx = list(range(40))
    pairs = [(ctx, [1]), (ctx, [2, 3]), (ctx + [99], [4])]
    root = plan(pairs)
    seen = []

    def extend(state, tokens):
        seen.append(list(tokens))
        return (state or []) + list(tokens)

    def suffixes(state, ps):
        return [(tuple(state), tuple(c), tuple(x)) for c, x in ps]

    out = run_plan(root, pairs, unshared=lambda ps: [None] * len(ps), extend=extend, suffixes=suffixes)
    assert seen == [ctx[:39]]
    assert out == [(tuple(ctx[:39]), (39,), (1,)), (tuple(ctx[:39]), (39,), (2, 3)),
                   (tuple(ctx[:39]), (39, 99), (4,))]


# -- the real model, both backends ------------------------------------------------------------------

# Float32 per-token tolerance. Observed here (AVX2, float32, SmolLM2-135M): at most 2.8e-5 (scratch)
# and 1.6e-5 (hf) per token, the size of the difference between two unshared runs whose batches
# are padded to other widths (2.4e-5: oneDNN and the attention kernels block sums by shape). 10x
# margin for other CPUs; a prefix at a wrong position or a missing key moves logprobs by > 0.1.
PER_TOKEN = 3e-4


def _mc_requests(n_docs: int, num_fewshot: int) -> list[tuple[str, str]]:
    """The loglikelihood requests of the built-in knowledge_mc task, few-shot."""
    from harness.runner import RunOptions, prepare_tasks

    (task,) = prepare_tasks(["knowledge_mc"], RunOptions(limit=n_docs, num_fewshot=num_fewshot))
    instances = task.build(task.docs()[:n_docs], chat=None)
    return [tuple(r) for inst in instances for r in inst.requests]


@pytest.fixture(scope="module")
def scratch_smollm2():
    from harness.models.scratch import ScratchLanguageModel

    return ScratchLanguageModel("smollm2-135m", batch_size=16)


def _both(model, requests):
    """(shared, unshared) responses and the tokens each computed."""
    model.prefix_sharing = True
    before = model.tokens_computed
    shared = model.loglikelihood(requests)
    middle = model.tokens_computed
    model.prefix_sharing = False
    try:
        unshared = model.loglikelihood(requests)
    finally:
        model.prefix_sharing = True
    return shared, unshared, middle - before, model.tokens_computed - middle


def _edge_requests(model) -> list[tuple[str, str]]:
    long_context = " ".join(["The quick brown fox jumps over the lazy dog."] * 2) * 2
    return [
        ("Question: Which city is the capital of France?\nAnswer:", " Paris"),  # one token
        ("Question: Which city is the capital of France?\nAnswer:", " Paris, the city of light"),  # longer
        ("Question: Which city is the capital of France?\nAnswer:", " Lyon"),
        (long_context, " and the dog sleeps."),  # cut from the left (max_length below)
        (long_context, " and the fox runs away."),
        ("", "An unconditioned text."),  # no context: the prefix token
    ]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scratch", "hf"])
def test_shared_equals_unshared_on_a_few_shot_task(backend, scratch_smollm2, hf_smollm2):
    model = scratch_smollm2 if backend == "scratch" else hf_smollm2
    requests = _mc_requests(6, num_fewshot=2)
    shared, unshared, computed_shared, computed_unshared = _both(model, requests)
    n_tokens = [len(model.encode_pair(c, x)[1]) for c, x in requests]
    worst = max(abs(a[0] - b[0]) / n for a, b, n in zip(shared, unshared, n_tokens))
    assert worst < PER_TOKEN, worst
    assert [a[1] for a in shared] == [b[1] for b in unshared]
    assert computed_shared < 0.6 * computed_unshared  # the 2-shot block and question run once per doc


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scratch", "hf"])
def test_shared_equals_unshared_on_edge_cases(backend, scratch_smollm2, hf_smollm2):
    model = scratch_smollm2 if backend == "scratch" else hf_smollm2
    requests = _edge_requests(model) + _mc_requests(2, num_fewshot=1)  # a batch mixing groups
    saved = model._max_length
    model._max_length = 24  # shorter than the long context: both paths cut it from the left alike
    try:
        shared, unshared, _, _ = _both(model, requests)
    finally:
        model._max_length = saved
    for (a, ga), (b, gb), (c, x) in zip(shared, unshared, requests):
        assert abs(a - b) < PER_TOKEN * len(model.encode_pair(c, x)[1]) and ga == gb
    assert model.truncated["loglikelihood"] > 0


@pytest.mark.slow
def test_shared_is_the_same_computation_in_float64():
    """In float64 (plain aten kernels) the summation-order noise is far below float32's rounding of
    the logits, so shared and unshared scores must agree to the bit there (observed: 0.0)."""
    import torch

    from harness.models.scratch import ScratchLanguageModel

    model = ScratchLanguageModel("smollm2-135m", batch_size=16, kernels="plain")
    model.model.to(torch.float64)
    requests = _mc_requests(2, num_fewshot=1)
    shared, unshared, computed_shared, computed_unshared = _both(model, requests)
    assert computed_shared < computed_unshared
    for (a, ga), (b, gb) in zip(shared, unshared):
        assert abs(a - b) < 1e-9 and ga == gb


def test_execute_keeps_each_question_s_choices_in_one_backend_call():
    """The runner's chunks are ordered by context and never end inside a run of one context,
    so the choices of a zero-shot question reach the backend together (before, chunks in
    length order split them and nothing was shared)."""
    from harness.execute import _chunks
    from harness.requests import request_key
    from harness.runner import RunOptions, prepare_tasks

    (task,) = prepare_tasks(["knowledge_mc"], RunOptions(limit=30))
    instances = task.build(task.docs()[:30], chat=None)
    unique = {}
    for inst in instances:
        for req in inst.requests:
            unique.setdefault(request_key(inst.adapter.method, inst.adapter.payload(req, {})), (inst.adapter, req))
    chunks = _chunks(unique, 32)
    where = {k: n for n, chunk in enumerate(chunks) for k in chunk}
    for inst in instances:
        keys = {request_key(inst.adapter.method, inst.adapter.payload(r, {})) for r in inst.requests}
        assert len({where[k] for k in keys}) == 1
    assert sorted(where) == sorted(unique) and all(len(c) >= 32 for c in chunks[:-1])


@pytest.mark.slow
def test_a_zero_shot_multiple_choice_run_shares_each_question(scratch_smollm2):
    import harness
    from harness.runner import RunOptions

    results = harness.evaluate([scratch_smollm2], ["knowledge_mc"], RunOptions(limit=12, output_dir=None, use_cache=False, n_boot=0))
    timing = results.evaluations[0].tasks["knowledge_mc"].timing
    assert timing["tokens_computed"] < 0.7 * timing["tokens_requested"]
