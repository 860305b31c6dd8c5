"""Every embedded task's data: at least 100 documents, unique ids, every templated field present,
no empty reference, and the first document renders."""

import pytest

from harness.registry import TaskRegistry
from harness.task import Task

REGISTRY = TaskRegistry()
EMBEDDED = sorted(name for name, c in REGISTRY.configs.items() if c.dataset_kwargs.get("data_files"))


def test_embedded_suite_covers_the_applications():
    tags = set(REGISTRY.tags())
    assert {"language_modelling", "generation", "summarization", "translation", "dialogue", "multiple_choice"} <= tags
    assert len(EMBEDDED) >= 12


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_task_data_is_valid(name):
    task = Task(REGISTRY.configs[name])
    docs = task.docs()
    assert len(docs) >= 100
    ids = [d.get("id") for d in docs]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids), "duplicate ids"
    instances = task.build(docs, chat=None)  # renders every template on every document
    for doc, inst in zip(docs, instances):
        assert all(v not in ("", None, []) for v in doc.values()), f"{inst.doc_id}: empty field"
        if inst.kind == "generate_until":
            assert all(r.strip() for r in inst.target), f"{inst.doc_id}: empty reference"
        if inst.choices is not None:
            assert len(set(inst.choices)) == len(inst.choices) and 0 <= inst.target < len(inst.choices)
        if task.config.output_type == "loglikelihood_rolling":
            assert len(inst.requests[0]) > 50
    assert task.config.about, "every task has a one-line description"
