"""Templates render in a sandbox, name missing fields, and few-shot sampling is seeded."""

import pytest

from harness.errors import HarnessError
from harness.prompts import render, render_value, sample_fewshot

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


def test_fewshot_is_seeded_and_excludes_the_document():
    pool = [{"id": i} for i in range(10)]
    a = sample_fewshot(pool, 3, seed=1, exclude_id=4, doc_index=4)
    b = sample_fewshot(pool, 3, seed=1, exclude_id=4, doc_index=4)
    assert a == b and all(d["id"] != 4 for d in a)
    assert [sample_fewshot(pool, 3, seed=s, exclude_id=4, doc_index=4) for s in range(5)] != [a] * 5
    with pytest.raises(HarnessError, match="only 9 usable"):
        sample_fewshot(pool, 10, seed=1, exclude_id=0, doc_index=0)
