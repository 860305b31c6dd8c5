"""Rendered prompts are byte-identical to lm-evaluation-harness's own for its unchanged task files.

Reference: lm-eval 0.4.13 (pinned in the test extras). Both sides read the same hub-schema
documents written here: lm-eval through `datasets` (`dataset_path: json` pointed at the files), the
harness through `--data-dir`'s hub layout (DATA_DIR/<dataset_path>/<dataset_name>/<split>.jsonl).
Contexts and continuations are compared exactly (no tolerance), few-shot seed 1234 (lm-eval's
default), for: arc_easy (random few-shot from train), mmlu_anatomy (first_n from dev, description),
hellaswag (`!function process_docs`, with --trust-task-code), gsm8k (generation, 5-shot),
gsm8k_cot (inline fewshot_config samples) and lambada_openai (loglikelihood: no target_delimiter).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402

from harness.registry import TaskRegistry  # noqa: E402
from harness.task import Task  # noqa: E402

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
WORDS = "the a of gravity plant energy water cell moon rock heat light sound force metal".split()


def _arc(i: int) -> dict:
    labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3", "4"]
    return {"id": f"Mercury_{i}", "question": f"Which {WORDS[i % 15]} makes {WORDS[(i * 7) % 15]} move?",
            "choices": {"text": [f"{WORDS[(i + k) % 15]} {k}" for k in range(4)], "label": labels},
            "answerKey": labels[i % 4]}


def _mmlu(i: int) -> dict:
    return {"question": f"  What is the {WORDS[i % 15]} of {WORDS[(i * 3) % 15]}?\n", "subject": "anatomy",
            "choices": [f"{WORDS[(i + k) % 15]}" for k in range(4)], "answer": i % 4}


def _hellaswag(i: int) -> dict:
    return {"ind": i, "activity_label": "Removing ice from car", "ctx_a": f"Then, the man writes over the snow [title] {WORDS[i % 15]}.",
            "ctx_b": "then", "ctx": "", "endings": [f", the man [step] adds {WORDS[(i + k) % 15]}  ." for k in range(4)],
            "source_id": f"activitynet~v_{i}", "split": "val", "split_type": "indomain", "label": str(i % 4)}


def _gsm8k(i: int) -> dict:
    return {"question": f"Tom has {i} apples and buys {i + 2}. How many?", "answer": f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}"}


# task -> (dataset_path, dataset_name, {split: docs}, num_fewshot)
CASES = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", {"train": [_arc(i) for i in range(20)], "validation": [_arc(i) for i in range(20, 24)],
                                                 "test": [_arc(i) for i in range(30, 38)]}, 3),
    "mmlu_anatomy": ("cais/mmlu", "anatomy", {"dev": [_mmlu(i) for i in range(5)], "validation": [_mmlu(i) for i in range(5, 8)],
                                              "test": [_mmlu(i) for i in range(10, 18)]}, 5),
    "hellaswag": ("Rowan/hellaswag", None, {"train": [_hellaswag(i) for i in range(12)], "validation": [_hellaswag(i) for i in range(20, 28)]}, 2),
    "gsm8k": ("openai/gsm8k", "main", {"train": [_gsm8k(i) for i in range(12)], "test": [_gsm8k(i) for i in range(40, 46)]}, 5),
    "lambada_openai": ("EleutherAI/lambada_openai", "default", {"test": [{"text": f"the {w} fell and the cat saw the {w}"} for w in WORDS]}, 0),
    "gsm8k_cot": ("openai/gsm8k", "main", {"train": [_gsm8k(i) for i in range(12)], "test": [_gsm8k(i) for i in range(40, 46)]}, 4),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub-copies")
    for path, name, splits, _ in CASES.values():
        folder = root / path / (name or "default")
        folder.mkdir(parents=True, exist_ok=True)
        for split, docs in splits.items():
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return root


@pytest.fixture(scope="module")
def registry() -> TaskRegistry:
    return TaskRegistry([str(LM_EVAL_TASKS)], trust_task_code=True)


def lm_eval_requests(yaml_path: str, name: str, data_dir: Path, num_fewshot: int, tmp_path: Path) -> list[list[tuple]]:
    """lm-eval's own requests per document: its loader resolves includes and !function, its
    ConfigurableTask builds the contexts from our local files. (Its TaskManager would find the
    same file but indexes the whole tree first: a minute here.)"""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = dict(load_yaml(yaml_path, resolve_func=True))
    assert cfg["task"] == name
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    path, dataset_name, splits, _ = CASES[name]
    folder = data_dir / path / (dataset_name or "default")
    cfg.update(dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {s: str(folder / f"{s}.jsonl") for s in splits}, "cache_dir": str(tmp_path / "hf")})
    task = ConfigurableTask(config=cfg)
    task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(rank=0, world_size=1)
    per_doc: dict[int, list[tuple]] = {}
    for inst in task.instances:
        per_doc.setdefault(inst.doc_id, []).append(inst.arguments)
    return [per_doc[i] for i in sorted(per_doc)]


def harness_requests(name: str, registry: TaskRegistry, data_dir: Path, num_fewshot: int, seed: int = 1234) -> tuple[Task, list[list[tuple]]]:
    config = registry.config(name)
    config.num_fewshot, config.seed = num_fewshot, seed
    task = Task(config, data_dir=str(data_dir))
    out = []
    for inst in task.build(task.docs(), chat=None):
        if inst.kind == "generate_until":
            out.append([(r.prompt, list(r.until)) for r in inst.requests])
        else:
            out.append([tuple(r) for r in inst.requests])
    return task, out


@pytest.mark.parametrize("name", sorted(CASES))
def test_contexts_are_byte_identical_to_lm_evaluation_harness(name, registry, data_dir, tmp_path):
    num_fewshot = CASES[name][3]
    yaml_path = registry.config(name).source_file
    assert yaml_path.startswith(str(LM_EVAL_TASKS))
    theirs = lm_eval_requests(yaml_path, name, data_dir, num_fewshot, tmp_path)
    task, ours = harness_requests(name, registry, data_dir, num_fewshot)
    assert len(ours) == len(theirs) > 0
    for doc_ours, doc_theirs in zip(ours, theirs):
        if task.config.output_type == "generate_until":
            (prompt, until), = doc_ours
            (their_prompt, their_kwargs), = doc_theirs
            assert prompt == their_prompt
            assert until == their_kwargs["until"]
        else:
            assert [r[0] for r in doc_ours] == [r[0] for r in doc_theirs]  # contexts
            assert [r[1] for r in doc_ours] == [r[1] for r in doc_theirs]  # continuations
    if name == "hellaswag":  # the process_docs code ran and is recorded with its hash
        assert any(p.endswith("hellaswag/utils.py") for p in task.code_files)
    if name == "arc_easy":  # the comparison can fail: another seed draws other examples
        _, other = harness_requests(name, registry, data_dir, num_fewshot, seed=1235)
        assert [d[0][0] for d in other] != [d[0][0] for d in theirs]


def test_fewshot_draws_follow_document_order(registry, data_dir):
    """The default sampler's one seeded generator: document 3's shots are the same whether or not
    the earlier documents were built first (validation renders only the first)."""
    config = registry.config("arc_easy")
    config.num_fewshot = 3
    a = Task(config, data_dir=str(data_dir))
    b = Task(config, data_dir=str(data_dir))
    a.validate()
    docs = a.docs()
    assert a.context(docs[3], 3, None) == b.context(docs[3], 3, None)
    assert a.context(docs[3], 3, None) != a.context(docs[4], 4, None)


@pytest.mark.slow
def test_arc_easy_acc_matches_lm_evaluation_harness(registry, data_dir, tmp_path):
    """The unchanged arc_easy file, 3-shot, on SmolLM2-135M through both harnesses' HF backends:
    the same acc. (The chat template stays off, as lm-eval's default; here through a group
    override of this project's own key.)"""
    import lm_eval as lm

    from harness.models.hf import converted_gguf_dir
    from harness.models.source import resolve_source
    from harness.runner import RunOptions, evaluate

    group_dir = tmp_path / "groups"
    group_dir.mkdir()
    (group_dir / "parity.yaml").write_text("group: parity_arc\ntask:\n  - {task: arc_easy, num_fewshot: 3, chat_template: never}\n")
    ours = evaluate(["hf:smollm2-135m"], ["parity_arc"], RunOptions(
        include_paths=[str(LM_EVAL_TASKS), str(group_dir)], data_dir=str(data_dir), output_dir=None, n_boot=10))
    ours_acc = ours.evaluations[0].tasks["arc_easy"].metrics["acc"].value

    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = dict(load_yaml(registry.config("arc_easy").source_file, resolve_func=True))
    cfg.pop("tag", None)
    folder = data_dir / "allenai/ai2_arc/ARC-Easy"
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={
        "data_files": {s: str(folder / f"{s}.jsonl") for s in ("train", "validation", "test")}, "cache_dir": str(tmp_path / "hf")})
    task = ConfigurableTask(config=cfg)
    task.set_config(key="num_fewshot", value=3)
    directory = converted_gguf_dir(resolve_source("smollm2-135m"))
    theirs = lm.simple_evaluate(model="hf", model_args=f"pretrained={directory},dtype=float32", tasks=[task],
                                batch_size=4, device="cpu")["results"]["arc_easy"]
    assert ours_acc == theirs["acc,none"]


LOCAL = """\
task: local_{kind}
dataset_path: json
dataset_kwargs:
  data_files: {{train: {data}, test: {data}}}
training_split: train
test_split: test
fewshot_split: {fewshot_split}
num_fewshot: 2
output_type: {kind}
description: "Topic: {{{{topic}}}}\\n"
doc_to_text: "{{{{q}}}}"
doc_to_target: "{{{{label}}}}"
{choice}
gen_prefix: "{gen_prefix}"
target_delimiter: "{target_delimiter}"
fewshot_delimiter: "\\n##\\n"
fewshot_config:
  sampler: {sampler}
"""


@pytest.mark.parametrize("kind, gen_prefix, target_delimiter, sampler, fewshot_split", [
    ("multiple_choice", "Answer:", " ", "default", "test"),   # the document itself is left out
    ("multiple_choice", "", " => ", "first_n", "train"),
    ("generate_until", "So the answer is", " ", "default", "train"),
    ("generate_until", "Result: ", "", "first_n", "test"),
])
def test_gen_prefix_description_and_delimiters_as_lm_evaluation_harness(tmp_path, kind, gen_prefix, target_delimiter, sampler, fewshot_split):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"q": f"Is {w} heavy?", "opts": ["no", "yes"], "label": i % 2, "topic": w}) + "\n"
                            for i, w in enumerate(WORDS[:8])))
    choice = 'doc_to_choice: "{{opts}}"' if kind == "multiple_choice" else ""
    text = LOCAL.format(kind=kind, data=data, choice=choice, gen_prefix=gen_prefix, target_delimiter=target_delimiter,
                        sampler=sampler, fewshot_split=fewshot_split)
    (tmp_path / "local.yaml").write_text(text)
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = dict(load_yaml(tmp_path / "local.yaml", resolve_func=True))
    cfg["dataset_kwargs"]["cache_dir"] = str(tmp_path / "hf")
    theirs_task = ConfigurableTask(config=cfg)
    theirs_task.set_fewshot_seed(seed=1234)
    theirs_task.build_all_requests(rank=0, world_size=1)
    theirs: dict[int, list] = {}
    for inst in theirs_task.instances:
        theirs.setdefault(inst.doc_id, []).append(inst.arguments)
    task = Task(TaskRegistry([str(tmp_path)]).config(f"local_{kind}"))
    for inst in task.build(task.docs(), chat=None):
        if kind == "generate_until":
            assert inst.requests[0].prompt == theirs[inst.index][0][0]
        else:
            assert [tuple(r) for r in inst.requests] == [tuple(a) for a in theirs[inst.index]]
