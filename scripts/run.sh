#!/usr/bin/env bash
# Set up (idempotent) and run the default evaluation: the `core` suite on smollm2-135m.
# Extra arguments go to `harness run`, e.g. `bash scripts/run.sh --limit 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/harness run "$@"
