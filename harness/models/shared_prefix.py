"""Shared-prefix scoring: loglikelihood requests whose inputs begin with the same tokens (the
choices of one question, documents behind one few-shot block, a task's common instruction)
run that prefix through the model once and score each continuation from its KV cache.

The plan is a tree over the token inputs `(context + continuation)[:-1]`. A node holds a prefix
shared by every request below it; a request is scored from the deepest node that holds part of
its context, by running only the rest of its input (its "suffix") against that node's cache. A
prefix never reaches into the positions that are scored: it stops at least one token before the
end of each context, so the logits of every continuation token come from the suffix pass, and
the numbers are the unshared ones up to float summation order (the attention over the cached
keys is split into other matrix shapes). Backends provide `extend_prefix` and
`score_suffix_batch` (harness/models/tokenized.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TokenPair = tuple[list[int], list[int]]
# A node is worth its own forward pass when sharing it saves at least this many token positions
# (a batch-1 pass over a few tokens costs about as much as that many tokens of a larger batch).
MIN_SAVED_TOKENS = 32
MAX_DEPTH = 64  # nested prefixes deeper than this are scored from their parent (bounds recursion)


@dataclass
class PrefixNode:
    """Tokens inputs[first][start:end] are shared by every request below; `items` are scored
    from this node's cache (their suffix starts at `end`), `children` extend it further."""

    start: int
    end: int
    first: int  # a request whose input holds the prefix
    items: list[int] = field(default_factory=list)
    children: list[PrefixNode] = field(default_factory=list)


def common_length(a: Sequence[int], b: Sequence[int], cap: int) -> int:
    """How many leading tokens a and b share, at most `cap`."""
    n = 0
    for x, y in zip(a[:cap], b[:cap]):
        if x != y:
            break
        n += 1
    return n


def plan(pairs: Sequence[TokenPair], min_saved: int = MIN_SAVED_TOKENS) -> PrefixNode:
    """The sharing tree of these (context, continuation) pairs: the root (start = end = 0, no
    cache) holds the requests that share nothing worth a forward pass."""
    inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
    # a prefix may cover context tokens only, and never the last one (it predicts cont[0])
    limits = [max(0, len(ctx) - 1) if cont else 0 for ctx, cont in pairs]
    order = sorted(range(len(pairs)), key=lambda i: inputs[i])
    # adj[k]: tokens that the k-th and (k+1)-th inputs in sorted order share, within both limits;
    # the prefix shared by a sorted run is the minimum of adj over it
    adj = [common_length(inputs[order[k]], inputs[order[k + 1]], min(limits[order[k]], limits[order[k + 1]]))
           for k in range(len(order) - 1)]
    root = PrefixNode(0, 0, order[0] if order else 0)

    def fill(node: PrefixNode, a: int, b: int, level: int, depth: int) -> None:
        """Place sorted requests a..b-1 (all sharing `level` >= node.end tokens) under `node`."""
        k = a
        while k < b:
            run_end = k + 1
            while run_end < b and adj[run_end - 1] > level:
                run_end += 1
            if run_end - k == 1:
                node.items.append(order[k])
            else:
                shared = min(adj[k : run_end - 1])
                if (shared - node.end) * (run_end - k - 1) >= min_saved and depth < MAX_DEPTH:
                    child = PrefixNode(node.end, shared, order[k])
                    node.children.append(child)
                    fill(child, k, run_end, shared, depth + 1)
                else:  # not worth a pass of its own here; a deeper split may be
                    fill(node, k, run_end, shared, depth + 1)
            k = run_end

    fill(root, 0, len(order), 0, 0)
    return root


def run_plan(
    root: PrefixNode,
    pairs: Sequence[TokenPair],
    *,
    unshared: Callable[[list[TokenPair]], list[Any]],
    extend: Callable[[Any, list[int]], Any] | None = None,
    suffixes: Callable[[Any, list[TokenPair]], list[Any]] | None = None,
    extend_many: Callable[[list[tuple[Any, list[int]]]], list[Any]] | None = None,
    suffixes_many: Callable[[list[tuple[Any, list[TokenPair]]]], list[list[Any]]] | None = None,
    nodes_per_pass: int = 16,
) -> list[Any]:
    """Score every pair by the plan: the root's requests by `unshared(pairs)`; a node's prefix by
    `extend(parent_state or None, tokens)`, its requests by `suffixes(state, (context[end:],
    continuation) pairs)`. Results in the order of `pairs`.

    Sibling nodes go up to `nodes_per_pass` at a time: a backend with `extend_many` (a list of
    (state, tokens) jobs) and `suffixes_many` (a list of (state, pairs)) runs each group in one
    batched pass, since many one-question passes cost far more than one pass over them all on a
    CPU (each pass reads every weight). At most one such group of states per depth is alive."""
    out: list[Any] = [None] * len(pairs)
    if root.items:
        for i, r in zip(root.items, unshared([pairs[i] for i in root.items])):
            out[i] = r
    if extend_many is None:
        assert extend is not None
        extend_many = lambda jobs: [extend(state, tokens) for state, tokens in jobs]  # noqa: E731
    if suffixes_many is None:
        assert suffixes is not None
        suffixes_many = lambda work: [suffixes(state, batch) for state, batch in work]  # noqa: E731

    def visit(level: list[tuple[PrefixNode, Any]]) -> None:
        level = sorted(level, key=lambda item: item[0].end - item[0].start)  # alike lengths pad little
        for a in range(0, len(level), nodes_per_pass):
            part = level[a : a + nodes_per_pass]
            jobs = []
            for node, state in part:
                ctx, cont = pairs[node.first]
                jobs.append((state, (ctx + cont)[node.start : node.end]))
            states = extend_many(jobs)
            scored = [(node, st) for (node, _), st in zip(part, states) if node.items]
            results = suffixes_many([(st, [(pairs[i][0][node.end :], pairs[i][1]) for i in node.items])
                                     for node, st in scored])
            for (node, _), rows in zip(scored, results):
                for i, r in zip(node.items, rows):
                    out[i] = r
            visit([(child, st) for (node, _), st in zip(part, states) for child in node.children])

    visit([(child, None) for child in root.children])
    return out


def shared_tokens(root: PrefixNode) -> int:
    """Token positions the prefix passes run (what `extend` computes)."""
    return sum(child.end - child.start + shared_tokens(child) for child in root.children)
