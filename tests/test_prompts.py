"""Templates render in a sandbox, name missing fields, and few-shot sampling is seeded."""

import pytest

from harness.errors import HarnessError
from harness.prompts import FewshotSampler, render, render_value

DOC = {"question": "2+2?", "choices": ["3", "4"], "answer": 1}


def test_render_and_native_values():
    assert render("Q: {{question}}", DOC, where="t.yaml: doc_to_text") == "Q: 2+2?"
    assert render_value("{{choices}}", DOC, where="x") == ["3", "4"]
    assert render_value("{{ answer }}", DOC, where="x") == 1
    assert render_value("{{choices[answer]}}", DOC, where="x") == "4"
    assert render_value("question", DOC, where="x") == "2+2?"  # a bare field name reads the field


@pytest.mark.parametrize("template", ["{{questoin}}", "{{ questoin }}", "A {{ questoin | upper }}"])
def test_missing_field_names_the_field_and_the_fields_present(template):
    with pytest.raises(HarnessError) as err:
        render_value(template, DOC, where="t.yaml: doc_to_text")
    message = str(err.value)
    assert "t.yaml: doc_to_text" in message and "'questoin'" in message and "answer, choices, question" in message


@pytest.mark.parametrize(
    "template",
    ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ cycler.__init__.__globals__.os }}", "{{ question.__class__.__base__ }}"],
)
def test_templates_cannot_reach_python_internals(template):
    with pytest.raises(HarnessError):
        render_value(template, DOC, where="x")


def test_fewshot_sampler_is_lm_evaluation_harness_draw_for_draw():
    """api/samplers.py: one Random(seed) for the task; n + 1 drawn and the document dropped when
    it may be in the pool; first_n takes the pool in order."""
    import random

    pool = [{"id": i} for i in range(10)]
    sampler = FewshotSampler(pool, sampler="default", seed=1234)
    rnd = random.Random(1234)
    assert sampler.sample(3) == rnd.sample(pool, 3)
    expected = [d for d in rnd.sample(pool, 4) if d != pool[4]][:3]
    assert sampler.sample(3, eval_doc=pool[4]) == expected and pool[4] not in expected
    first = FewshotSampler(pool, sampler="first_n", seed=None)
    assert first.sample(3, eval_doc=pool[1]) == [pool[0], pool[2], pool[3]]
    with pytest.raises(HarnessError, match="holds only 10"):
        first.sample(11)
