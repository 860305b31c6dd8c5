"""Backends by registration and through the `harness.backends` entry point; options checked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import HarnessError
import harness.models as models_registry
from harness.models import BACKENDS, load_model, register_backend
from harness.models.base import LanguageModel
from harness.plugins import entry_point_group

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""An outside package: a backend that continues every prompt with its reversed text."""
from harness.models import register_backend
from harness.models.base import LanguageModel, make_fingerprint
from harness.requests import ModelInfo

LOADS = []


@register_backend("reverse")
class ReverseModel(LanguageModel):
    accepted_options = frozenset({"batch_size", "suffix"})

    def __init__(self, name, batch_size=1, suffix=""):
        LOADS.append(name)
        self.name, self.suffix = name, suffix

    def loglikelihood(self, requests):
        return [(-float(len(c)), True) for _, c in requests]

    def loglikelihood_rolling(self, texts, *, max_length=None, stride=None):
        return [(-float(len(t)), len(t)) for t in texts]

    def generate(self, requests):
        return [r.prompt[::-1] + self.suffix for r in requests]

    @property
    def fingerprint(self):
        return make_fingerprint("reverse", weights=self.name, settings={"suffix": self.suffix},
                                code=("harness_reverse_plugin",))

    @property
    def info(self):
        return ModelInfo(name=self.name, backend="reverse", spec=f"reverse:{self.name}")
'''


@pytest.fixture
def plugin_path(tmp_path) -> Path:
    """A package on a path of its own with a dist-info that declares the entry point, as pip
    would install it."""
    (tmp_path / "harness_reverse_plugin").mkdir()
    (tmp_path / "harness_reverse_plugin" / "__init__.py").write_text(PLUGIN)
    dist = tmp_path / "harness_reverse_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-reverse-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{entry_point_group('backends')}]\nreverse = harness_reverse_plugin\n")
    return tmp_path


def test_an_outside_package_registers_a_backend_through_the_entry_point(plugin_path):
    code = textwrap.dedent("""
        from harness.models import load_model, split_spec
        from harness.requests import GenerateRequest
        import harness_reverse_plugin as plugin
        lm = load_model("reverse:abc", suffix="!", batch_size=2, dtype="float32")
        print(lm.generate([GenerateRequest(prompt="hello")])[0], lm.info.backend, len(lm.fingerprint))
        split_spec("reverse:x"); split_spec("reverse:y")
        print(plugin.LOADS)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["olleh! reverse 64", "['abc']"]


def test_a_plugin_that_fails_to_import_is_named(plugin_path):
    (plugin_path / "harness_reverse_plugin" / "__init__.py").write_text("raise ImportError('no numpy here')\n")
    code = "from harness.models import load_model; load_model('smollm2-135m')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    assert out.returncode != 0
    assert "plugin 'reverse' = 'harness_reverse_plugin' (package harness-reverse-plugin, group harness.backends)" in out.stderr


def test_register_backend_decorator_in_process():
    @register_backend("echo_test")
    class Echo(LanguageModel):
        def __init__(self, name, **options):
            self.name = name

        loglikelihood = loglikelihood_rolling = generate = None  # type: ignore[assignment]
        fingerprint = info = None  # type: ignore[assignment]

    try:
        assert isinstance(load_model("echo_test:x"), Echo)
        with pytest.raises(TypeError):
            register_backend("bad")(dict)
    finally:
        BACKENDS.pop("echo_test")
        models_registry._CLASSES.pop("echo_test")


def test_unknown_options_are_rejected_with_the_valid_ones():
    with pytest.raises(HarnessError, match=r"no option 'dtyp' \(did you mean 'dtype'\?\); its options: "
                                           r"batch_size, compile, device, dtype, fused_decode, group, kernels, max_length, prefix_sharing, quant, quant_kernels"):
        load_model("scratch:smollm2-135m", dtyp="bfloat16")
    with pytest.raises(HarnessError, match="no option 'n_threads'"):
        load_model("hf:smollm2-135m", n_threads=2)


def test_an_outside_package_adds_a_task_folder_through_the_entry_point(tmp_path):
    package = tmp_path / "harness_capitals_tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "capitals.jsonl").write_text('{"q": "France", "a": "Paris"}\n')
    (package / "capitals_plugin.yaml").write_text(
        "task: capitals_plugin\ndataset_path: json\ndataset_kwargs:\n  data_files: capitals.jsonl\n"
        "test_split: train\noutput_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    dist = tmp_path / "harness_capitals_tasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-capitals-tasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{entry_point_group('tasks')}]\ncapitals = harness_capitals_tasks\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "harness", "tasks", "capitals_plugin"], capture_output=True,
                         text=True, env=env, timeout=1200, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "capitals_plugin" in out.stdout and "generate_until" in out.stdout
