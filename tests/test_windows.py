"""Rolling windows: every token scored exactly once, identical to lm-evaluation-harness's."""

import random

import pytest

from harness.models.base import cut_at_stop, rolling_windows


def flatten_targets(windows):
    return [t for _, targets in windows for t in targets]


@pytest.mark.parametrize("n, max_length", [(1, 4), (7, 4), (8, 4), (9, 4), (100, 16), (3, 512)])
def test_disjoint_windows_match_lm_evaluation_harness(n, max_length):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = [random.Random(n).randrange(1000) for _ in range(n)]
    ours = rolling_windows(tokens, prefix_token=-1, max_length=max_length)
    theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, -1, max_length, 1)]
    assert [(list(a), list(b)) for a, b in ours] == [(list(a), list(b)) for a, b in theirs]


@pytest.mark.parametrize("n, max_length, stride", [(50, 8, 3), (50, 8, 8), (9, 8, 1), (1000, 64, 17)])
def test_strided_windows_score_each_token_once_with_bounded_input(n, max_length, stride):
    tokens = list(range(100, 100 + n))
    windows = rolling_windows(tokens, prefix_token=0, max_length=max_length, stride=stride)
    assert flatten_targets(windows) == tokens
    seq = [0, *tokens]
    for context, targets in windows:
        inputs = (context + targets)[:-1]
        assert 1 <= len(inputs) <= max_length
        assert len(context) >= 1
        # the window is a contiguous slice of the sequence: context really precedes the targets
        start = seq.index(context[0])
        assert seq[start : start + len(context) + len(targets)] == context + targets
    # after the first window, each window sees max_length - stride tokens of earlier context
    for context, targets in windows[1:-1]:
        assert len(context) + len(targets) - 1 == max_length


def test_bad_window_arguments():
    with pytest.raises(ValueError):
        rolling_windows([1, 2], 0, max_length=4, stride=5)


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("a. b\nc", ["\n", "."]) == "a"
    assert cut_at_stop("abc", []) == "abc"
