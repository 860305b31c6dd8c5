"""Standard benchmarks (tasks/standard): hub datasets by name, run offline from local copies.

Offline, each fails with one line naming the task and --data-dir; with --data-dir pointing at
tests/fixtures/standard (tiny original records in each hub dataset's schema) each validates and
renders the prompts lm-evaluation-harness renders. The Jinja2 ports of lm-evaluation-harness's
Python preprocessing (wikitext detokenizer, hellaswag process_docs) are checked against the
installed lm-evaluation-harness functions.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.registry import TaskRegistry
from harness.runner import RunOptions, evaluate, prepare_tasks
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "standard"
STANDARD_DIR = REPO / "tasks" / "standard"
REGISTRY = TaskRegistry()
STANDARD = sorted(name for name, c in REGISTRY.configs.items() if "standard" in c.tag)

# Each hub dataset's evaluated split and fields, as on the hub (nested mappings as "field.key").
HUB_SCHEMA = {
    "wikitext2": ("test", {"page"}),
    "lambada_openai": ("test", {"text"}),
    "cnn_dailymail": ("test", {"article", "highlights", "id"}),
    "xsum": ("test", {"document", "summary", "id"}),
    "samsum": ("test", {"id", "dialogue", "summary"}),
    "wmt14_en_fr": ("test", {"translation.en", "translation.fr"}),
    "wmt14_fr_en": ("test", {"translation.en", "translation.fr"}),
    "wmt14_en_de": ("test", {"translation.de", "translation.en"}),
    "wmt19_zh_en": ("validation", {"translation.en", "translation.zh"}),
    "flores200_en_zh": ("devtest", {"id", "URL", "domain", "topic", "has_image", "has_hyperlink",
                                    "sentence_eng_Latn", "sentence_zho_Hans"}),
    "daily_dialog": ("test", {"dialog", "act", "emotion"}),
    "hellaswag": ("validation", {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id",
                                 "split", "split_type", "label"}),
    "arc_easy": ("test", {"id", "question", "choices.text", "choices.label", "answerKey"}),
}


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)


def fixture_docs(name: str) -> list[dict]:
    split, _ = HUB_SCHEMA[name]
    lines = (FIXTURES / name / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def built(name: str):
    (task,) = prepare_tasks([name], RunOptions(data_dir=str(FIXTURES)))
    return task, task.build(task.docs(), chat=None)


def test_every_benchmark_has_a_task_fixtures_and_docs():
    assert STANDARD == sorted(HUB_SCHEMA)
    readme = (STANDARD_DIR / "README.md").read_text(encoding="utf-8")
    for name in STANDARD:
        config = REGISTRY.configs[name]
        assert config.about and "\n" not in config.about
        assert len(config.tag) == 2 and config.tag[1].startswith("standard_")
        assert "/" in config.dataset_path and not config.dataset_kwargs.get("data_files")
        assert f"`{name}`" in readme


@pytest.mark.parametrize("name", sorted(HUB_SCHEMA))
def test_fixtures_are_in_the_hub_schema(name):
    _, schema = HUB_SCHEMA[name]
    docs = fixture_docs(name)
    assert 3 <= len(docs) <= 5
    for doc in docs:
        fields = {f"{k}.{sub}" for k, v in doc.items() if isinstance(v, dict) for sub in v}
        fields |= {k for k, v in doc.items() if not isinstance(v, dict)}
        assert fields == schema, f"{name}: fields {sorted(fields)}"


@pytest.mark.parametrize("name", STANDARD)
def test_offline_without_data_dir_is_one_line_naming_task_and_data_dir(name):
    with pytest.raises(HarnessError) as err:
        prepare_tasks([name], RunOptions())
    message = str(err.value)
    assert "\n" not in message
    assert f"task {name}:" in message and "--data-dir" in message
    split, _ = HUB_SCHEMA[name]
    assert f"DATA_DIR/{name}/{split}.jsonl" in message


@pytest.mark.parametrize("name", STANDARD)
def test_every_task_validates_and_builds_from_local_files(name):
    _, instances = built(name)
    assert len(instances) == len(fixture_docs(name))
    for inst in instances:
        if inst.kind == "generate_until":
            assert inst.context and all(r.strip() for r in inst.target)
        elif inst.choices is not None:
            assert len(inst.choices) == 4 and 0 <= inst.target < 4
        else:
            assert inst.requests[0]


def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(FIXTURES))
    (task,) = prepare_tasks(["arc_easy"], RunOptions())
    assert len(task.docs()) == 3


def test_missing_split_file_in_data_dir_is_one_line(tmp_path):
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "test.jsonl").write_text("{}\n")  # hellaswag evaluates the validation split
    with pytest.raises(HarnessError) as err:
        prepare_tasks(["hellaswag"], RunOptions(data_dir=str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and "hellaswag" in message and "validation.jsonl does not exist" in message


# -- rendered prompts -------------------------------------------------------------------------------


def test_wikitext2_detokenizes_the_page():
    _, instances = built("wikitext2")
    text = instances[0].requests[0]
    assert text.startswith(" = Harrow Mill Bridge =\n\nHarrow Mill Bridge is a stone arch bridge")
    assert "Northshire, England. Built between 1794 and 1797, it" in text
    assert "62 metres (203 ft) long" in text and "14.5 metres" in text
    assert "\n== History ==\n" in text and "\n=== Later repairs ===\n" in text
    assert 'called "the handsomest crossing in the shire".' in text
    assert "north-east corner" in text and "The county's engineers" in text and "4,000 vehicles" in text
    finch = instances[1].requests[0]
    assert "below 5°C" in finch and "'the winter singer'" in finch and "alder [rarely birch]" in finch
    assert "seeds; in winter" in finch
    assert instances[0].target == text and instances[0].context == ""


def test_lambada_openai_splits_off_the_last_word():
    _, instances = built("lambada_openai")
    ((context, continuation),) = instances[0].requests
    assert context.endswith("wrapped it twice around his neck and grinned at the")
    assert continuation == " scarf"
    assert instances[2].requests[0][1] == " keys"


def test_hellaswag_query_and_endings_are_preprocessed():
    _, instances = built("hellaswag")
    first = instances[0]
    assert first.context == "Washing dishes: A man stands at a kitchen sink full of soapy water. He"
    assert first.requests[0] == (first.context, " scrubs a plate with a sponge and rinses it under the tap.")
    wikihow = instances[1]
    assert wikihow.context == ("Home and Garden: How to repot a cactus. Wear thick gloves. Cactus spines can "
                               "pierce thin gardening gloves, so use leather ones or wrap the plant in newspaper.")
    # as in lm-evaluation-harness, a tag at the start of an ending leaves its leading space
    assert wikihow.choices[1] == " Choose a pot slightly larger than the old one. A pot with a drainage hole keeps the roots from rotting."
    assert wikihow.choices[2] == " Soak the cactus in the bath overnight. Add salt to the water."
    assert wikihow.target == 1 and instances[2].target == 1


def test_arc_easy_gold_index_from_answer_key():
    _, instances = built("arc_easy")
    assert instances[0].context == "Question: Which of these is a source of light?\nAnswer:"
    assert instances[0].choices == ["a mirror", "the Sun", "the Moon", "a window"]
    assert [i.target for i in instances] == [1, 2, 0]  # answerKey "B", "C", and "1" of numeric labels
    assert instances[1].requests[2] == (instances[1].context, " carbon dioxide")


def test_summarization_prompts():
    _, cnn = built("cnn_dailymail")
    assert cnn[0].context.startswith("Summarize the following article:\n\nBRISTOL, England (CNN) -- A city council")
    assert cnn[0].context.endswith("The scheme becomes permanent in June.\n\nSummary:")
    highlights = (
        "Council approves weekend car ban on three central streets .\n"
        "Trial doubled the number of shoppers, council figures show .\n"
        "Two new bus stops added after residents complained about longer routes ."
    )
    assert cnn[0].target == [highlights]
    assert cnn[0].requests[0].until == ("\n\n",) and cnn[0].requests[0].max_gen_toks == 128
    _, xsum = built("xsum")
    assert xsum[0].context.startswith("Article: The footbridge over the river Tay at Inverbrae")
    assert xsum[0].context.endswith("visitors to the town centre.\n\nSummarize the article in one sentence.\nSummary:")
    assert xsum[0].target == ["A footbridge in Inverbrae has reopened after six months of repairs to cracked supports."]
    _, samsum = built("samsum")
    assert samsum[0].context == (
        "Dialogue:\nMia: Are you still coming to the market tomorrow?\nTom: Yes, but I can't before 10.\n"
        "Mia: 10 is fine, I'll wait at the fountain.\nTom: Great, see you there :)\n\n"
        "Summarize the dialogue in one or two sentences.\nSummary:"
    )
    assert "\r" not in samsum[1].context


def test_translation_prompts():
    _, en_fr = built("wmt14_en_fr")
    assert en_fr[0].context == "English phrase: The museum will reopen to the public next month after two years of work.\nFrench phrase:"
    assert en_fr[0].target == ["Le musée rouvrira ses portes au public le mois prochain après deux ans de travaux."]
    assert en_fr[0].requests[0].until == ("\n",)
    _, fr_en = built("wmt14_fr_en")
    assert fr_en[1].context == "French phrase: Les élèves ont planté des arbres fruitiers dans la cour de l'école.\nEnglish phrase:"
    assert fr_en[1].target == ["The pupils planted fruit trees in the school yard."]
    _, en_de = built("wmt14_en_de")
    assert en_de[2].context == "English phrase: The new cycle path connects the two villages on the river.\nGerman phrase:"
    assert en_de[2].target == ["Der neue Radweg verbindet die beiden Dörfer am Fluss."]
    _, zh_en = built("wmt19_zh_en")
    assert zh_en[0].context == "Translate the following Chinese sentence into English.\nChinese: 这座城市计划在明年开通第二条地铁线路。\nEnglish:"
    assert zh_en[0].target == ["The city plans to open a second subway line next year."]
    task, flores = built("flores200_en_zh")
    assert task.config.language == "zh"
    assert flores[2].context == "Translate the following English sentence into Chinese.\nEnglish: Bees visit flowers to collect nectar and pollen.\nChinese:"
    assert flores[2].target == ["蜜蜂拜访花朵，采集花蜜和花粉。"]


def test_daily_dialog_predicts_the_last_turn():
    _, instances = built("daily_dialog")
    assert instances[0].context == (
        "A: Hi , Anna . Are you coming to the picnic on Saturday ?\nB: I'd love to . What should I bring ?\n"
        "A: Maybe some fruit . Tom is bringing sandwiches .\nB:"
    )
    assert instances[0].target == ["Fine , I'll bring a big bag of apples ."]
    assert instances[1].context.endswith("It's next to the bakery .\nA:")


# -- the Jinja2 ports against lm-evaluation-harness's own Python ------------------------------------


def _lm_eval_module(relative: str):
    lm_eval = pytest.importorskip("lm_eval")
    path = Path(lm_eval.__file__).parent / "tasks" / relative
    if not path.is_file():
        pytest.skip(f"lm-evaluation-harness has no {relative}")
    spec = importlib.util.spec_from_file_location(f"_lmeval_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wikitext_detokenizer_matches_lm_evaluation_harness():
    reference = _lm_eval_module("wikitext/preprocess_wikitext.py").wikitext_detokenizer
    (task,) = prepare_tasks(["wikitext2"], RunOptions(data_dir=str(FIXTURES)))
    pages = [d["page"] for d in fixture_docs("wikitext2")]
    alphabet = list("ab  \n\t()[]{}\"'s=@-,.:;!?N1") + ["°", " @-@ ", " @,@ ", " @.@ ", "= = ", " 's"]
    rng = random.Random(7)
    pages += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    for page in pages:
        assert task.target({"page": page}) == reference({"page": page}), repr(page)


def test_hellaswag_preprocessing_matches_lm_evaluation_harness():
    utils = _lm_eval_module("hellaswag/utils.py")
    (task,) = prepare_tasks(["hellaswag"], RunOptions(data_dir=str(FIXTURES)))
    docs = fixture_docs("hellaswag")
    tags = ["[header]", "[title]", "[step]", "[substeps]", " [title]"]
    rng = random.Random(11)
    for _ in range(300):  # synthetic WikiHow-style text with the known tags in random places
        words = [rng.choice(["Hold", "the", "pot.", "Water", "it", "well.", " ", ""] + tags) for _ in range(12)]
        doc = dict(docs[1], ctx_a=" ".join(words), ctx_b=rng.choice(["", "then", "she"]))
        doc["endings"] = [" ".join(rng.choice(["Dig", "a", "hole.", ""] + tags) for _ in range(8)) for _ in range(4)]
        docs.append(doc)
    datasets = pytest.importorskip("datasets")
    processed = utils.process_docs(datasets.Dataset.from_list(docs))
    for doc, theirs in zip(docs, processed):
        assert task.text(doc) == theirs["query"], repr(doc["ctx_a"])
        assert task.choices(doc) == theirs["choices"], repr(doc["endings"])
        assert task.gold_index(doc, task.choices(doc)) == theirs["gold"]


class _IgnoreFunctionLoader(yaml.SafeLoader):
    pass


_IgnoreFunctionLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")

# our task -> (lm-evaluation-harness task file, keys that must agree)
LM_EVAL_TWINS = {
    "wikitext2": ("wikitext/wikitext.yaml", ["dataset_path", "dataset_name", "test_split", "doc_to_text"]),
    "lambada_openai": ("lambada/lambada_openai.yaml",
                       ["dataset_path", "dataset_name", "test_split", "doc_to_text", "doc_to_target"]),
    "hellaswag": ("hellaswag/hellaswag.yaml", ["dataset_path", "validation_split"]),
    "arc_easy": ("arc/arc_easy.yaml",
                 ["dataset_path", "dataset_name", "test_split", "doc_to_text", "doc_to_target", "doc_to_choice"]),
    "wmt14_en_fr": ("translation/wmt14_en-fr.yaml", ["dataset_path", "dataset_name", "doc_to_text"]),
    "wmt14_fr_en": ("translation/wmt14_fr-en.yaml", ["dataset_path", "dataset_name", "doc_to_text"]),
    "cnn_dailymail": ("cnn_dailymail/cnn_dailymail.yaml",
                      ["dataset_path", "dataset_name", "test_split", "doc_to_text", "doc_to_target"]),
}


@pytest.mark.parametrize("name", sorted(LM_EVAL_TWINS))
def test_hub_ids_and_templates_agree_with_lm_evaluation_harness(name):
    lm_eval = pytest.importorskip("lm_eval")
    relative, keys = LM_EVAL_TWINS[name]
    path = Path(lm_eval.__file__).parent / "tasks" / relative
    if not path.is_file():
        pytest.skip(f"lm-evaluation-harness has no {relative}")
    theirs = yaml.load(path.read_text(encoding="utf-8"), Loader=_IgnoreFunctionLoader)  # a SafeLoader subclass
    ours = REGISTRY.configs[name]
    for key in keys:
        assert getattr(ours, key) == theirs.get(key), f"{name}: {key}"
    if name.startswith("wmt14"):
        assert ours.doc_to_target.strip() == theirs["doc_to_target"].strip()
        assert ours.generation_kwargs["until"] == ["\n"]


# -- end to end on the real model -------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_from_local_copies(tmp_path):
    results = evaluate(
        ["smollm2-135m"], ["wikitext2", "xsum"],
        RunOptions(limit=3, data_dir=str(FIXTURES), output_dir=str(tmp_path), n_boot=20),
    )
    tasks = results.to_dict()["evaluations"][0]["tasks"]
    wiki, xsum = tasks["wikitext2"], tasks["xsum"]
    assert wiki["n_samples"] == 3 and xsum["n_samples"] == 3
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert math.isfinite(wiki["metrics"][metric]["value"]) and wiki["metrics"][metric]["value"] > 0
    assert 1.0 < wiki["metrics"]["byte_perplexity"]["value"] < 10.0
    rows = [json.loads(line) for line in (tmp_path / xsum["samples_file"]).read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["output"], str) for r in rows)
    # ROUGE is a fraction in [0, 1]: the mean of each sample's score, as the samples file records it
    for metric in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        value = xsum["metrics"][metric]["value"]
        assert 0.0 <= value <= 1.0
        assert value == pytest.approx(sum(r["scores"][metric] for r in rows) / 3, abs=1e-12)
    assert re.search(r"Summarize the article in one sentence", rows[0]["prompt"])


def test_wikitext_scores_the_detokenized_page_but_counts_the_original():
    """lm-evaluation-harness normalizes wikitext perplexities by the original page's words and bytes."""
    task, instances = built("wikitext2")
    for doc, inst in zip(fixture_docs("wikitext2"), instances):
        assert inst.scored_text == doc["page"]
        assert inst.requests[0] != doc["page"]  # the model sees the detokenized text
