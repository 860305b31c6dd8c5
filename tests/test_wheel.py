"""The wheel: built from this checkout, installed into a clean virtual environment, it carries the
built-in tasks and runs one; its extras are declared and install.

The clean venv reuses this environment's installed dependencies (torch and the rest) through a
.pth file, so nothing is downloaded; it has no harness of its own until the wheel is installed,
and the commands run outside the checkout, so only the wheel can answer.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def sh(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the build reads, so that setuptools' build/ never lands in the checkout.
    src = out / "src"
    for name in ("pyproject.toml", "setup.py", "README.md"):
        src.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    for name in ("harness", "tasks"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src, cwd=out)
    (path,) = out.glob("harness_lm-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("venv")
    sh(sys.executable, "-m", "venv", "--without-pip", root / "env", cwd=root)
    (purelib,) = (root / "env" / "lib").glob("python3*/site-packages")
    shared = [p for p in site.getsitepackages() if Path(p).is_dir() and Path(p).resolve() != REPO.resolve()]
    (purelib / "shared-dependencies.pth").write_text("".join(p + "\n" for p in shared))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{root / 'env' / 'bin'}{os.pathsep}{env['PATH']}"
    return root / "env", env


def pip_into(venv: Path, env: dict[str, str], *args: str | Path) -> None:
    sh(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", *args, cwd=venv, env=env)


def test_wheel_carries_tasks_cli_and_extras(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    tasks = {p.relative_to(REPO / "tasks").as_posix() for p in (REPO / "tasks").rglob("*") if p.is_file()}
    assert tasks and {f"harness/_tasks/{t}" for t in tasks} <= names
    assert {"harness/cli/__init__.py", "harness/cli/run.py", "harness/py.typed",
            "harness/models/scratch/kernels/quant_gemv.c"} <= names  # compiled at first use
    assert not any(n.startswith("tests/") for n in names)
    assert "Name: harness-lm" in metadata
    for extra in ("llamacpp", "serve", "plots", "test"):
        assert f"Provides-Extra: {extra}" in metadata
    assert 'matplotlib>=3.8; extra == "plots"' in metadata
    assert 'llama-cpp-python>=0.3.16; extra == "llamacpp"' in metadata


def test_wheel_install_runs_a_builtin_task(wheel, venv, tmp_path):
    env_dir, env = venv
    pip_into(env_dir, env, "--no-deps", wheel)
    python = env_dir / "bin" / "python"
    where = sh(python, "-c", "import harness, harness.registry as r; print(harness.__file__); print(r.BUILTIN_TASKS)",
               cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(env_dir) for p in where), where
    assert Path(where[1]).name == "_tasks"
    listing = sh(env_dir / "bin" / "harness", "tasks", cwd=tmp_path, env=env).stdout
    assert "knowledge_mc" in listing and "translation_fr_en" in listing
    run = sh(env_dir / "bin" / "harness", "run", "--model", "scratch:smollm2-135m", "--tasks", "knowledge_mc",
             "--limit", "2", "--output", tmp_path / "out", "--no-cache", "--bootstrap", "20", cwd=tmp_path, env=env)
    assert "knowledge_mc" in run.stdout and "acc" in run.stdout
    (results,) = (tmp_path / "out").glob("*.json")
    record = json.loads(results.read_text())["evaluations"][0]["tasks"]["knowledge_mc"]
    assert record["n_samples"] == 2 and Path(record["config"]["source_file"]).is_relative_to(env_dir)


def test_wheel_with_an_extra(wheel, venv, tmp_path):
    """[plots]: pip resolves the extra (its dependency is already there: nothing is fetched) and
    `harness plot` draws from the committed reference results."""
    env_dir, env = venv
    pip_into(env_dir, env, "--force-reinstall", "--no-deps", wheel)
    pip_into(env_dir, env, f"harness-lm[plots] @ {wheel.as_uri()}")
    requires = sh(env_dir / "bin" / "python", "-c", "from importlib.metadata import requires; "
                  "print('\\n'.join(requires('harness-lm')))", cwd=tmp_path, env=env).stdout
    assert 'matplotlib>=3.8; extra == "plots"' in requires
    runs = sorted(str(p) for p in (REPO / "results" / "runs").glob("*.json"))
    assert runs
    out = sh(env_dir / "bin" / "harness", "plot", *runs, "--kind", "bars", "--format", "png", "-o", tmp_path / "plots",
             cwd=tmp_path, env=env).stdout
    assert (tmp_path / "plots" / "bars.png").is_file(), out
