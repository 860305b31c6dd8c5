"""Credentials never reach a results file, an error message or a log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.redact import redact, redact_argv
from tests.conftest import REPO, write_task
from tests.test_api_backend import MODELS, completion, fake_factory  # noqa: F401 - the fixture
from tests.test_api_load import GEN_TASK

KEY = "sk-live-0123456789abcdefXYZ"


def test_each_kind_of_credential_is_masked_and_the_rest_kept():
    assert redact(f"api:http://user:{KEY}@10.0.0.1:8000/v1#m") == "api:http://***@10.0.0.1:8000/v1#m"
    assert redact(f"api:https://{KEY}@host/v1") == "api:https://***@host/v1"
    assert redact(f"http://h/v1?concurrency=2&api_key={KEY}&x=1") == "http://h/v1?concurrency=2&api_key=***&x=1"
    assert redact(f"Authorization: Bearer {KEY}") == "Authorization: Bearer ***"
    assert KEY not in redact(f"the key {KEY} leaked") and "hf_abcdefghijklmnopqrstu" not in redact(
        "token hf_abcdefghijklmnopqrstu")
    assert redact_argv(["harness", "--api-key", KEY, f"--token={KEY}", "--api-key-env", "MY_KEY"]) == [
        "harness", "--api-key", "***", "--token=***", "--api-key-env", "MY_KEY"]
    assert redact("harness run --model smollm2-135m --tasks core") == "harness run --model smollm2-135m --tasks core"


def test_a_key_in_the_url_user_part_stays_out_of_the_results_and_the_output(fake_factory, tmp_path):
    fake = fake_factory(lambda f, p, b: (200, MODELS) if p == "/v1/models" else
                        (200, completion(" 1")) if p == "/v1/completions" else None)
    url = fake.url.replace("http://", f"http://user:{KEY}@")
    write_task(tmp_path / "tasks", "gen", GEN_TASK, [{"prompt": "One?", "target": "1"}])
    done = subprocess.run(
        [sys.executable, "-m", "harness", "-v", "run", "--model", f"api:{url}?retries=0&tokenizer=none", "--tasks", "gen",
         "--include-path", str(tmp_path / "tasks"), "--output", str(tmp_path / "out")],
        cwd=REPO, env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True,
        text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert KEY not in written
    (results,) = (tmp_path / "out").glob("*.json")
    assert "http://***@127.0.0.1" in json.loads(results.read_text())["command"]


def test_file_names_of_tasks_and_models_are_not_taken_for_keys():
    for name in ("hf-m__mc_colors.jsonl", "hf-smollm2-135m__lm_en.jsonl", "scratch-smollm2-135m__knowledge_mc"):
        assert redact(name) == name
