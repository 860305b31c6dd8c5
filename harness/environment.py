"""What a results file records about where a number was computed: versions, machine, git state."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("harness", "torch", "transformers", "tokenizers", "sacrebleu", "rouge-score", "gguf", "numpy")
# Committed reference results live here; regenerating them changes the tree but not the code.
RESULTS_FOLDER = "results"


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files outside results/ differ from it) of the harness checkout;
    (None, None) outside a git checkout."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None, None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
             f":(exclude){RESULTS_FOLDER}"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    return out.stdout.strip(), bool(dirty.stdout.strip()) if dirty.returncode == 0 else None


def git_commit() -> str | None:
    """HEAD of the harness checkout, with `-dirty` when tracked code differs from it."""
    commit, dirty = git_state()
    return None if commit is None else commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions and machine: what a reader needs to reproduce a number."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    commit, dirty = git_state()
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env
