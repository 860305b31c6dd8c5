"""Shared fixtures. Every test runs offline: nothing may reach the Hugging Face hub."""

from __future__ import annotations

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from harness.cache import cache_dir  # noqa: E402

# Converted model copies persist between sessions (they are keyed by content hash); responses
# go to a fresh cache per session so no test reads another run's answers.
os.environ.setdefault("HARNESS_MODEL_CACHE", str(cache_dir() / "models"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["HARNESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("harness-cache"))


@pytest.fixture(scope="session")
def hf_smollm2():
    """The real SmolLM2-135M-Instruct through transformers, loaded once per session."""
    from harness.models.hf import HFLanguageModel

    return HFLanguageModel("smollm2-135m", batch_size=16)


def write_task(folder: Path, name: str, body: str, data: list[dict] | None = None) -> Path:
    """Write a task YAML (and its data as JSON lines) into `folder`."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in data))
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path


MC_DOCS = [
    {"id": "q1", "question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Madrid", "Rome"], "answer": 1},
    {"id": "q2", "question": "How many legs does a spider have?", "choices": ["six", "eight", "ten", "four"], "answer": 1},
    {"id": "q3", "question": "Which planet is closest to the Sun?", "choices": ["Venus", "Earth", "Mercury", "Mars"], "answer": 2},
    {"id": "q4", "question": "What do bees make?", "choices": ["milk", "silk", "honey", "wool"], "answer": 2},
]

MC_TASK = """\
task: {name}
tag: [tiny]
dataset_path: json
dataset_kwargs:
  data_files: {name}.jsonl
test_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
chat_template: never
metric_list:
  - metric: acc
  - metric: acc_norm
"""
