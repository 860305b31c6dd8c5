"""lm-evaluation-harness's own task files, unchanged, give lm-evaluation-harness's own numbers.

Reference: lm-eval 0.4.13 (pinned in the test extras), its `hf` model (HFLM, loaded once for the
module) on the plain transformers copy of SmolLM2-135M that our `hf:` backend loads. Both sides
read the same hub-schema documents written here (lm-eval through `datasets`' json builder, the
harness through `--data-dir`), few-shot seed 1234, chat template off (lm-eval's default), and each
side runs every task in one evaluation. Generation is cut to MAX_GEN_TOKS new tokens in both
(`gen_kwargs`, the same run setting in each) to keep the module to a few minutes on a CPU.

Tolerances: acc, acc_norm, exact_match, f1 and the task-code metrics identical; perplexities
within 1e-6 relative (both run transformers on the same weights; only batch padding differs,
about 3e-8 observed). Generated answers are compared too, so an exact_match of 0 on both sides
cannot hide different generations.

Tasks: arc_easy, mmlu_anatomy (first_n few-shot from dev), hellaswag (`!function process_docs`),
all three 2-shot; piqa, lambada_openai, wikitext (`!function` target and `process_results`),
triviaqa (generation, exact_match with ignore_case / ignore_punctuation after remove_whitespace),
gsm8k (5-shot; strict-match and flexible-extract), cb (`aggregation: !function`),
super_glue-cb-t5-prompt (`metric: !function` and its aggregation), bbh_zeroshot_web_of_lies (a
custom filter class, `function: !function utils.MapRegexFilter`), 0-shot unless the file says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from tests.test_lmeval_prompts import CASES, LM_EVAL_TASKS, WORDS  # noqa: E402

pytestmark = pytest.mark.slow
RELATIVE = 1e-6
# lambada's `perplexity` is exp(-mean log-likelihood) of one short continuation per document: its
# relative error is the absolute error of that mean, i.e. float32 noise of single-token logprobs
# (2.4e-5 per token between batch compositions on the AVX2 CPU); observed 4.8e-7 and 1.1e-6 in
# two runs. Corpus perplexities (wikitext) average the noise away and keep 1e-6.
PER_REQUEST_RELATIVE = 1e-5
MAX_GEN_TOKS = 24
FEWSHOT = 2  # the run's num_fewshot for the few-shot group


def _piqa(i: int) -> dict:
    return {"goal": f"How do you {['dry', 'cool', 'clean', 'open'][i % 4]} a {WORDS[(i * 5) % 15]} jar?",
            "sol1": f"Put it in the {WORDS[(i + 3) % 15]} oven.", "sol2": f"Wipe it with a {WORDS[(i + 6) % 15]} cloth.",
            "label": i % 2}


TRIVIA = [("What is the capital of France", ["Paris", "paris", "Paris, France"]),
          ("Which planet is known as the Red Planet", ["Mars", "mars", "Planet Mars"]),
          ("What is the largest ocean on Earth", ["Pacific", "Pacific Ocean", "pacific ocean"]),
          ("Who wrote Romeo and Juliet", ["William Shakespeare", "Shakespeare", "shakespeare"]),
          ("What is the chemical symbol for gold", ["Au", "au"]),
          ("How many days are in a week", ["7", "seven", "Seven"])]


def _trivia(i: int) -> dict:
    q, aliases = TRIVIA[i % len(TRIVIA)]
    return {"question": q, "question_id": f"tc_{i}", "question_source": "local", "entity_pages": {}, "search_results": {},
            "answer": {"aliases": aliases, "normalized_aliases": [a.lower() for a in aliases], "value": aliases[0],
                       "normalized_value": aliases[0].lower(), "type": "WikipediaEntity", "matched_wiki_entity_name": "",
                       "normalized_matched_wiki_entity_name": "", "doc_source": "TagMe"}}


def _gsm8k(i: int) -> dict:
    return {"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
            "answer": f"Tom has {i} + {i + 2} = {2 * i + 2} apples.\n#### {2 * i + 2}"}


def _cb(i: int) -> dict:
    return {"premise": f"The {WORDS[i % 15]} was near the {WORDS[(i + 4) % 15]} all day.",
            "hypothesis": f"the {WORDS[i % 15]} was {'near' if i % 3 == 0 else 'far from'} the {WORDS[(i + 4) % 15]}",
            "idx": i, "label": i % 3}


def _web_of_lies(i: int) -> dict:
    names = ["Fidel", "Jerry", "Vina", "Millicent", "Raymond"]
    lies = i % 2 == 0
    return {"input": f"Question: {names[i % 5]} {'lies' if lies else 'tells the truth'}. {names[(i + 1) % 5]} says "
                     f"{names[i % 5]} tells the truth. Does {names[(i + 1) % 5]} tell the truth?",
            "target": "No" if lies else "Yes"}


def _wikitext(i: int) -> dict:
    lines = (Path(__file__).resolve().parent.parent / "tasks" / "language_modelling" / "lm_en.jsonl").read_text().splitlines()
    doc = json.loads(lines[i])
    text = doc["text"].replace("-", " @-@ ").replace(",", " ,").replace(".", " .").replace("'s", " 's")
    return {"page": f" = {doc['title']} = \n\n {text} \n"}


# task -> (dataset_path, dataset_name, {split: docs})
DATA = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", {k: v[:5] if k == "test" else v for k, v in CASES["arc_easy"][2].items()}),
    "mmlu_anatomy": ("cais/mmlu", "anatomy", {k: v[:5] if k == "test" else v for k, v in CASES["mmlu_anatomy"][2].items()}),
    "hellaswag": ("Rowan/hellaswag", None, {k: v[:5] if k == "validation" else v for k, v in CASES["hellaswag"][2].items()}),
    "piqa": ("baber/piqa", None, {"train": [_piqa(i) for i in range(6)], "validation": [_piqa(i) for i in range(10, 16)]}),
    "lambada_openai": ("EleutherAI/lambada_openai", "default", {"test": CASES["lambada_openai"][2]["test"][:6]}),
    "wikitext": ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1",
                 {"train": [_wikitext(i) for i in range(4, 6)], "validation": [_wikitext(i) for i in range(6, 8)],
                  "test": [_wikitext(i) for i in range(3)]}),
    "triviaqa": ("mandarjoshi/trivia_qa", "rc.nocontext", {"train": [_trivia(i) for i in range(6)],
                                                             "validation": [_trivia(i) for i in range(6)]}),
    "gsm8k": ("openai/gsm8k", "main", {"train": [_gsm8k(i) for i in range(1, 9)], "test": [_gsm8k(i) for i in range(20, 23)]}),
    "cb": ("aps/super_glue", "cb", {"train": [_cb(i) for i in range(20, 26)], "validation": [_cb(i) for i in range(6)]}),
    "super_glue-cb-t5-prompt": ("aps/super_glue", "cb", {"train": [_cb(i) for i in range(20, 26)],
                                                         "validation": [_cb(i) for i in range(3)]}),
    "bbh_zeroshot_web_of_lies": ("SaylorTwift/bbh", "web_of_lies", {"test": [_web_of_lies(i) for i in range(3)]}),
}
FEW_SHOT_TASKS = ["arc_easy", "mmlu_anatomy", "hellaswag"]
ZERO_SHOT_TASKS = [t for t in DATA if t not in FEW_SHOT_TASKS and t != "super_glue-cb-t5-prompt"]
# cb and its t5 prompt read the same dataset: the t5 prompt's three documents run in their own pass
T5_TASKS = ["super_glue-cb-t5-prompt"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> dict[str, Path]:
    """One hub-layout folder per pass (two tasks of a pass never share a dataset folder)."""
    roots = {}
    for group in ("few", "zero", "t5"):
        root = tmp_path_factory.mktemp(f"hub-{group}")
        members = {"few": FEW_SHOT_TASKS, "zero": ZERO_SHOT_TASKS, "t5": T5_TASKS}[group]
        for name in members:
            path, dataset_name, splits = DATA[name]
            folder = root / path / (dataset_name or "default")
            folder.mkdir(parents=True, exist_ok=True)
            for split, docs in splits.items():
                (folder / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        roots[group] = root
    return roots


@pytest.fixture(scope="module")
def lm_eval_model():
    from lm_eval.models.huggingface import HFLM

    from harness.models.hf import converted_gguf_dir
    from harness.models.source import resolve_source

    return HFLM(pretrained=str(converted_gguf_dir(resolve_source("smollm2-135m"))), dtype="float32", batch_size=4, device="cpu")


def _lm_eval_task(name: str, root: Path, cache: Path):
    """lm-eval's ConfigurableTask for its own file, reading our local copy (its loader resolves
    include and !function; its TaskManager would index the whole tree first)."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    from harness.registry import TaskRegistry

    yaml_path = TaskRegistry([str(LM_EVAL_TASKS)], trust_task_code=True).config(name).source_file
    assert yaml_path.startswith(str(LM_EVAL_TASKS))
    cfg = dict(load_yaml(yaml_path, resolve_func=True))
    for key in ("tag", "group", "task_list", "include"):
        cfg.pop(key, None)
    path, dataset_name, splits = DATA[name]
    folder = root / path / (dataset_name or "default")
    cfg.update(dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {s: str(folder / f"{s}.jsonl") for s in splits}, "cache_dir": str(cache)})
    return ConfigurableTask(config=cfg)


def _both(names: list[str], root: Path, num_fewshot: int | None, hf_smollm2, lm_eval_model, tmp: Path) -> dict:
    import lm_eval

    from harness.runner import RunOptions, evaluate

    out = tmp / "ours"
    ours = evaluate([hf_smollm2], names, RunOptions(
        include_paths=[str(LM_EVAL_TASKS)], data_dir=str(root), output_dir=str(out), n_boot=10, trust_task_code=True,
        num_fewshot=num_fewshot, gen_kwargs={"max_gen_toks": MAX_GEN_TOKS}))
    tasks = [_lm_eval_task(n, root, tmp / "hf-cache") for n in names]
    theirs = lm_eval.simple_evaluate(model=lm_eval_model, tasks=tasks, num_fewshot=num_fewshot, log_samples=True,
                                     gen_kwargs={"max_gen_toks": MAX_GEN_TOKS}, fewshot_random_seed=1234)
    def by_filter(samples: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for s in sorted(samples, key=lambda s: s["doc_id"]):
            out.setdefault(s["filter"], []).append(s)
        return out

    return {name: (ours.evaluations[0].tasks[name], ours.samples(name), theirs["results"][name],
                   by_filter(theirs["samples"][name])) for name in names}


@pytest.fixture(scope="module")
def runs(data_dir, hf_smollm2, lm_eval_model, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    out.update(_both(FEW_SHOT_TASKS, data_dir["few"], FEWSHOT, hf_smollm2, lm_eval_model, tmp / "few"))
    out.update(_both(ZERO_SHOT_TASKS, data_dir["zero"], None, hf_smollm2, lm_eval_model, tmp / "zero"))
    out.update(_both(T5_TASKS, data_dir["t5"], None, hf_smollm2, lm_eval_model, tmp / "t5"))
    print(json.dumps({n: {"ours": {k: m.value for k, m in r[0].metrics.items()},
                          "lm_eval": {k: v for k, v in r[2].items() if "stderr" not in k and k != "alias"}}
                      for n, r in out.items()}, default=str, indent=1))
    return out


def _ours(result, metric: str, filter_name: str | None):
    """A metric's value; under a filter_list pipeline, from that pipeline's metrics."""
    if filter_name is None:
        return result.metrics[metric].value
    return result.other["metrics_by_filter"][filter_name][metric]["value"]


EXACT = {
    "arc_easy": [("acc", None), ("acc_norm", None)],
    "mmlu_anatomy": [("acc", None)],
    "hellaswag": [("acc", None), ("acc_norm", None)],
    "piqa": [("acc", None), ("acc_norm", None)],
    "lambada_openai": [("acc", None)],
    "triviaqa": [("exact_match", "remove_whitespace")],
    "gsm8k": [("exact_match", "strict-match"), ("exact_match", "flexible-extract")],
    "cb": [("acc", None), ("f1", None)],
    "super_glue-cb-t5-prompt": [("exact_match", None), ("mean_3class_f1", None)],
    "bbh_zeroshot_web_of_lies": [("exact_match", "strict-match"), ("exact_match", "flexible-extract")],
}
PERPLEXITY = {
    "lambada_openai": ["perplexity"],
    "wikitext": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_scores_are_identical_to_lm_evaluation_harness(name, runs):
    ours, _, theirs, _ = runs[name]
    for metric, filter_name in EXACT[name]:
        assert _ours(ours, metric, filter_name) == theirs[f"{metric},{filter_name or 'none'}"], (metric, filter_name)


@pytest.mark.parametrize("name", sorted(PERPLEXITY))
def test_perplexities_match_lm_evaluation_harness(name, runs):
    ours, _, theirs, _ = runs[name]
    for metric in PERPLEXITY[name]:
        value = _ours(ours, metric, None)
        assert math.isfinite(value)
        tolerance = PER_REQUEST_RELATIVE if metric == "perplexity" else RELATIVE
        assert value == pytest.approx(theirs[f"{metric},none"], rel=tolerance), metric


@pytest.mark.parametrize("name", ["triviaqa", "gsm8k", "super_glue-cb-t5-prompt", "bbh_zeroshot_web_of_lies"])
def test_generations_and_filtered_answers_are_lm_evaluation_harness_s(name, runs):
    """Same generated text per document, and the same answer after every filter pipeline."""
    ours, rows, _, samples = runs[name]
    n_docs = len(DATA[name][2]["test" if "test" in DATA[name][2] else "validation"])
    assert set(samples) == set(ours.other.get("metrics_by_filter") or {"none": None})
    for filter_name, theirs in samples.items():
        assert len(rows) == len(theirs) == n_docs
        for row, sample in zip(rows, theirs):
            assert row.output == sample["resps"][0][0]
            answer = row.other["filters"][filter_name]["answer"] if "filters" in row.other else row.output
            assert answer == sample["filtered_resps"][0]


def test_task_code_ran_and_is_recorded(runs):
    """process_results, the metric/aggregation functions and the custom filter are task code: each
    run records every file it imported with its SHA-256."""
    import hashlib

    expect = {"wikitext": "wikitext/preprocess_wikitext.py", "cb": "super_glue/cb/aggregate.py",
              "super_glue-cb-t5-prompt": "super_glue/cb/t5_utils.py", "bbh_zeroshot_web_of_lies": "bbh/zeroshot/utils.py",
              "hellaswag": "hellaswag/utils.py"}
    for name, suffix in expect.items():
        code = runs[name][0].other["task_code"]
        (path,) = [p for p in code if p.endswith(suffix)]
        assert code[path] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
