"""An lm-evaluation-harness task file runs unchanged through --include-path and gives
lm-evaluation-harness's own perplexities on the same model. Both run transformers on the same
weights, so only batch padding differs: about 3e-8 relative was observed; the tolerance, 1e-6
relative, leaves a 30x margin and still catches any change in what is scored (one token more or
less moves these perplexities by 1e-3 or more)."""

import json

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
RELATIVE = 1e-6  # observed about 3e-8 (see the module docstring)

LM_EVAL_TASK = """\
task: parity_prose
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
should_decontaminate: true
doc_to_decontamination_query: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmeval-task")
    lines = (REPO / "tasks" / "language_modelling" / "lm_en.jsonl").read_text().splitlines()[:12]
    data = folder / "prose.jsonl"
    data.write_text("\n".join(lines) + "\n")
    (folder / "parity_prose.yaml").write_text(LM_EVAL_TASK.format(data=data))
    return folder


def test_word_perplexity_matches_lm_evaluation_harness(task_dir, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.models.hf import converted_gguf_dir
    from harness.models.source import resolve_source
    from harness.runner import RunOptions, evaluate

    ours = evaluate(["hf:smollm2-135m"], ["parity_prose"],
                    RunOptions(include_paths=[str(task_dir)], output_dir=str(tmp_path), n_boot=10))
    ours_metrics = ours.to_dict()["evaluations"][0]["tasks"]["parity_prose"]["metrics"]

    # lm-evaluation-harness's HF backend reads a transformers directory (not a GGUF tokenizer):
    # give it the plain copy of the same weights that the hf backend loads.
    directory = converted_gguf_dir(resolve_source("smollm2-135m"))
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={directory},dtype=float32", tasks=["parity_prose"],
        task_manager=TaskManager(include_path=str(task_dir)), batch_size=4, device="cpu",
    )["results"]["parity_prose"]
    print(json.dumps({"ours": {k: v["value"] for k, v in ours_metrics.items()}, "lm_eval": theirs}, default=str))
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours_metrics[name]["value"] == pytest.approx(theirs[f"{name},none"], rel=RELATIVE)


def test_short_windows_match_lm_evaluation_harness_max_length(task_dir, tmp_path):
    """With 64-token windows every document spans several windows: lm-evaluation-harness's
    `max_length=64` against our task key `rolling_max_length: 64` (stride = window)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.models.hf import converted_gguf_dir
    from harness.models.source import resolve_source
    from harness.runner import RunOptions, evaluate

    ours_dir = tmp_path / "ours"
    ours_dir.mkdir()
    text = (task_dir / "parity_prose.yaml").read_text().replace("task: parity_prose", "task: parity_prose_64")
    (ours_dir / "parity_prose_64.yaml").write_text(text + "rolling_max_length: 64\n")
    # the 64-token copy of the task file reads the data of the first (outside its own folder)
    ours = evaluate(["hf:smollm2-135m"], ["parity_prose_64"],
                    RunOptions(include_paths=[str(ours_dir)], output_dir=None, n_boot=10, allow_external_data=True))
    ours_metrics = ours.to_dict()["evaluations"][0]["tasks"]["parity_prose_64"]["metrics"]
    directory = converted_gguf_dir(resolve_source("smollm2-135m"))
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={directory},dtype=float32,max_length=64", tasks=["parity_prose"],
        task_manager=TaskManager(include_path=str(task_dir)), batch_size=4, device="cpu",
    )["results"]["parity_prose"]
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours_metrics[name]["value"] == pytest.approx(theirs[f"{name},none"], rel=RELATIVE)
    # shorter windows see less context: perplexity is higher than with the model's full window
    full = evaluate(["hf:smollm2-135m"], ["parity_prose"],
                    RunOptions(include_paths=[str(task_dir)], output_dir=None, n_boot=10))
    assert ours_metrics["word_perplexity"]["value"] > full.evaluations[0].tasks["parity_prose"].metrics["word_perplexity"].value
