#!/usr/bin/env bash
# Set up (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 RAY_DISABLE_USAGE_STATS=1
python -m pytest -q tests --durations=15 "$@"
