"""A third-party client against our server: lm-evaluation-harness's `local-completions` model
pointed at `harness serve` gives the loglikelihoods the harness computes in process."""

from __future__ import annotations

import pytest

pytest.importorskip("tenacity", reason="lm-evaluation-harness's API models need its api extra: pip install tenacity")

from tests.test_api_backend import REQUESTS, TEXTS, start_serve, stop  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served():
    proc, url = start_serve("--model", "smollm2-135m")
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def lmeval(served):
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    # tokenizer_backend "auto": lm-evaluation-harness finds the server's /tokenizer_info and
    # /tokenize and tokenizes through them ("remote"), so it needs no tokenizer files of its own.
    lm = LocalCompletionsAPI(model="smollm2-135m", base_url=f"{served}/completions", num_concurrent=1,
                             max_retries=1, timeout=120, max_length=2048)
    assert lm.tokenizer_backend == "remote"
    return lm


def instances(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_local_completions_loglikelihood_equals_in_process(lmeval, hf_smollm2):
    theirs = lmeval.loglikelihood(instances("loglikelihood", REQUESTS), disable_tqdm=True)
    ours = hf_smollm2.loglikelihood(REQUESTS)
    for (a, ga), (b, gb), req in zip(theirs, ours, REQUESTS):
        assert abs(a - b) <= 1e-4, req
        assert ga == gb, req


def test_local_completions_rolling_loglikelihood_equals_in_process(lmeval, hf_smollm2):
    theirs = lmeval.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in TEXTS]), disable_tqdm=True)
    ours = hf_smollm2.loglikelihood_rolling(TEXTS)
    for a, (b, n) in zip(theirs, ours):
        assert abs(a - b) / n <= 1e-4
