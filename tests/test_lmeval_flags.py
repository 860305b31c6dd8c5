"""`harness run` takes lm-evaluation-harness's run flags: its spellings give the same run as ours.

Runs the real scratch decoder on SmolLM2-135M (about a second to load) on two built-in tasks with
two documents each, without the response cache so that every number is computed afresh.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.run_args import parse_key_values, parse_seed, run_seed, split_top_level

OURS = [
    "--model", "scratch:smollm2-135m", "--model-args", "dtype=float32,max_length=1024",
    "--tasks", "translation_fr_en", "knowledge_mc", "--limit", "2", "--num-fewshot", "1",
    "--apply-chat-template", "--fewshot-as-multiturn", "false", "--system-instruction", "Answer briefly.",
    "--gen-kwargs", "max_gen_toks=8,temperature=0", "--seed", "7", "--batch-size", "4",
]
LMEVAL = [
    "--model", "scratch", "--model_args", "pretrained=smollm2-135m,dtype=float32,max_length=1024",
    "--tasks", "translation_fr_en,knowledge_mc", "--limit", "2", "--num_fewshot", "1",
    "--apply_chat_template", "--fewshot_as_multiturn", "false", "--system_instruction", "Answer briefly.",
    "--gen_kwargs", "max_gen_toks=8,temperature=0", "--seed", "0,1234,1234,7", "--batch_size", "4",
    "--log_samples",
]


def run(tmp_path: Path, name: str, argv: list[str], capsys) -> dict:  # noqa: ANN001
    out = tmp_path / name
    flag = "--output_path" if "--log_samples" in argv else "--output"
    assert main(["run", *argv, flag, str(out), "--no-cache", "--bootstrap", "20"]) == 0
    capsys.readouterr()
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())


def summary(results: dict) -> dict:
    """What must agree between the two runs: per task the config, hashes, chat use and metrics."""
    (evaluation,) = results["evaluations"]
    out = {}
    for task, record in evaluation["tasks"].items():
        metrics = {m: (v["value"], v["n"]) for m, v in record["metrics"].items()}
        config = {k: record["config"][k] for k in ("num_fewshot", "generation_kwargs", "seed")}
        out[task] = (config, record["prompt_hash"], record["chat_template"], metrics)
    return out


def first_prompt(results: dict, task: str, root: Path) -> str:
    (evaluation,) = results["evaluations"]
    line = (root / evaluation["tasks"][task]["samples_file"]).read_text().splitlines()[0]
    return json.loads(line)["prompt"]


@pytest.mark.timeout(900)
def test_lmeval_spellings_give_the_same_run(tmp_path, capsys):
    ours = run(tmp_path, "ours", OURS, capsys)
    theirs = run(tmp_path, "lmeval", LMEVAL, capsys)
    assert summary(ours) == summary(theirs)
    assert ours["evaluations"][0]["model"]["spec"] == theirs["evaluations"][0]["model"]["spec"] == "scratch:smollm2-135m"
    for key in ("num_fewshot", "apply_chat_template", "fewshot_as_multiturn", "system_instruction", "gen_kwargs",
                "model_options", "seed", "dtype"):
        assert ours["options"][key] == theirs["options"][key], key

    # The flags took effect: one shot, inside a single user turn after the system message.
    tasks = summary(ours)
    config, _, chat, _ = tasks["translation_fr_en"]
    assert chat is True and config["num_fewshot"] == 1 and config["seed"] == 7
    assert config["generation_kwargs"]["max_gen_toks"] == 8
    prompt = first_prompt(ours, "translation_fr_en", tmp_path / "ours")
    assert prompt.count("<|im_start|>system\nAnswer briefly.") == 1
    assert prompt.count("<|im_start|>user") == 1 and prompt.count("French:") == 2
    assert ours["options"]["model_options"] == {"max_length": 1024}
    assert ours["evaluations"][0]["model"]["dtype"] in ("float32", "torch.float32")


@pytest.mark.timeout(900)
def test_defaults_are_lmevals_plain_text_and_auto_device(tmp_path, capsys):
    """No flags: the task files decide the chat template (translation asks for it, knowledge does
    not), device and dtype auto resolve to this machine's (CPU: float32) and are recorded."""
    results = run(tmp_path, "default", ["--model", "scratch:smollm2-135m", "--tasks", "knowledge_mc,translation_fr_en",
                                        "--limit", "1", "--gen-kwargs", "max_gen_toks=4"], capsys)
    tasks = summary(results)
    assert tasks["knowledge_mc"][2] is False and tasks["translation_fr_en"][2] is True
    assert results["options"]["device"] == "auto" and results["options"]["dtype"] == "auto"
    model = results["evaluations"][0]["model"]
    assert model["device"].startswith("cuda") or model["device"] == "cpu"
    forced = run(tmp_path, "off", ["--model", "scratch:smollm2-135m", "--tasks", "translation_fr_en", "--limit", "1",
                                   "--gen-kwargs", "max_gen_toks=4", "--no-chat-template"], capsys)
    assert summary(forced)["translation_fr_en"][2] is False


def test_a_task_file_without_chat_template_is_plain_text():
    from harness.config import TaskConfig
    from harness.task import Task

    task = Task(TaskConfig(task="t", dataset_path="json", output_type="generate_until"))
    assert task.uses_chat(True) is False  # lm-eval's default
    assert task.uses_chat(True, requested=True) is True and task.uses_chat(False, requested=True) is False


@pytest.mark.parametrize("argv, message", [
    (["--model-args", "dtyp=float32"], "--model-args dtyp: the scratch backend (scratch:smollm2-135m) takes "
                                       "batch_size, compile, device, dtype, "),
    (["--gen-kwargs", "max_tokens=5"], "--gen-kwargs max_tokens: not a generation setting; use do_sample"),
    (["--apply-chat-template", "chatml"], "named templates are not supported"),
    (["--output-path", "out.json"], "give a folder"),
    (["--model", "hf:a", "--model", "hf:b", "--model-args", "pretrained=c"], "pretrained=NAME goes with one --model"),
])
def test_refused_with_the_valid_list(tmp_path, capsys, argv, message):
    code = main(["run", "--model", "scratch:smollm2-135m", "--tasks", "knowledge_mc", "--limit", "1",
                 "--output", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_argument_forms():
    assert split_top_level('until=["\\n", ","],max_gen_toks=5') == ['until=["\\n", ","]', "max_gen_toks=5"]
    assert parse_key_values('until=["a","b"],temperature=0.5,do_sample=true,name="007",x=None') == {
        "until": ["a", "b"], "temperature": 0.5, "do_sample": True, "name": "007", "x": None}
    assert parse_key_values('{"dtype": "bfloat16"}') == {"dtype": "bfloat16"}
    assert run_seed(parse_seed("42")) == 42
    assert run_seed(parse_seed("0,1234,1234,1234")) == 1234 and run_seed(parse_seed("0,None,8")) == 1234
    assert run_seed(parse_seed("0,None,8,52")) == 52


def test_compile_reaches_the_scratch_backend(tmp_path, capsys):
    """--compile is the scratch backend's `compile` option: on CPU the backend itself refuses it."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU --compile runs; this checks that the option reaches the backend on CPU")
    code = main(["run", "--model", "scratch:smollm2-135m", "--tasks", "knowledge_mc", "--limit", "1", "--compile",
                 "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "compile=True is for cuda" in err, err
    code = main(["run", "--model", "hf:smollm2-135m", "--tasks", "knowledge_mc", "--limit", "1", "--compile",
                 "--output", str(tmp_path / "o")])
    assert code == 2 and "--model-args compile: the hf backend" in capsys.readouterr().err
