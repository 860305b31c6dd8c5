"""The model fingerprint (the response cache key) changes with every part docs/cache.md lists."""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import sys

import pytest

from harness.models import base
from harness.models.base import code_version, fingerprint_parts, hash_parts, make_fingerprint
from harness.models.source import WeightSource, source_fingerprint

PARTS = {"backend": "scratch", "weights": "w1", "settings": {"dtype": "float32", "max_length": 8},
         "code": ("harness.models.scratch",), "libraries": ("torch",)}


def key(**changes) -> str:
    args = {**PARTS, **changes}
    return make_fingerprint(args.pop("backend"), **args)


@pytest.mark.parametrize("change", [
    {"backend": "hf"},
    {"weights": "w2"},
    {"settings": {"dtype": "bfloat16", "max_length": 8}},
    {"settings": {"dtype": "float32", "max_length": 9}},
    {"settings": {"dtype": "float32", "max_length": 8, "kernels": "onednn-fp32"}},
    {"code": ("harness.models.hf",)},
    {"libraries": ("torch", "transformers")},
])
def test_each_part_changes_the_key(change):
    assert key(**change) != key()


def test_parts_hold_the_installed_library_versions_and_the_code_hash(monkeypatch):
    parts = fingerprint_parts("scratch", weights="w", settings={}, code=("harness.models.scratch",),
                              libraries=("torch", "no-such-library-here"))
    assert parts["libraries"] == {"torch": importlib.metadata.version("torch"), "no-such-library-here": "absent"}
    assert parts["code"] == code_version(*base.SHARED_CODE, "harness.models.scratch")
    before = make_fingerprint("scratch", weights="w", settings={}, libraries=("torch",))
    real = base.library_versions
    monkeypatch.setattr(base, "library_versions", lambda *d: {**real(*d), "torch": "99.0"})  # a torch upgrade
    assert make_fingerprint("scratch", weights="w", settings={}, libraries=("torch",)) != before


def test_an_edit_to_a_backends_source_changes_its_code_version(tmp_path, monkeypatch):
    package = tmp_path / "fakebackend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kernels.py").write_text("SCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = code_version("fakebackend")
    (package / "kernels.py").write_text("SCALE = 1.0000001\n")  # a one-character fix in a submodule
    code_version.cache_clear()
    assert code_version("fakebackend") != before
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("")
    code_version.cache_clear()
    after_sub = code_version("fakebackend")
    assert after_sub != before
    sys.modules.pop("fakebackend", None)
    code_version.cache_clear()


def test_a_folders_weights_identity_counts_code_and_subfolders(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    source = WeightSource("dir", str(folder), "model")
    first = source_fingerprint(source)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")  # version control: not part of the model
    assert source_fingerprint(source) == first
    (folder / "modeling_custom.py").write_text("# trust_remote_code runs this\n")
    with_code = source_fingerprint(source)
    assert with_code != first
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    with_sub = source_fingerprint(source)
    assert with_sub != with_code
    (folder / "tokenizer" / "vocab.txt").write_text("a\nc\n")
    assert source_fingerprint(source) != with_sub


def test_a_loaded_backend_keys_on_every_part(tmp_path):
    """scratch: on a tiny model folder, each setting and the folder's content change the key."""
    from test_scratch import tiny_hf_config, tiny_hf_model, write_tokenizer

    from harness.models.scratch import ScratchLanguageModel

    folder = tmp_path / "tiny"
    tiny_hf_model(tiny_hf_config()).save_pretrained(str(folder))
    write_tokenizer(folder)
    lm = ScratchLanguageModel(str(folder))
    parts = lm.fingerprint_parts
    assert set(parts) == {"backend", "weights", "settings", "code", "libraries"}
    assert {"torch", "transformers", "tokenizers", "safetensors"} <= set(parts["libraries"])
    assert parts["settings"]["kernels"] == lm.info.extra["kernels"]
    keys = {lm.fingerprint,
            ScratchLanguageModel(str(folder), max_length=64).fingerprint,
            ScratchLanguageModel(str(folder), kernels="plain").fingerprint}
    assert len(keys) == 3
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert ScratchLanguageModel(str(copy)).fingerprint == lm.fingerprint  # content, not path
    (copy / "generation_config.json").write_text('{"note": 1}')
    assert ScratchLanguageModel(str(copy)).fingerprint != lm.fingerprint
