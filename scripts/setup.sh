#!/usr/bin/env bash
# Create .venv with the pinned CPU torch and the project (editable) plus test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull the multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# Lightricks' ltx-core: the reference our parity tests compare against (tests/test_official_runtime.py). It declares
# torch~=2.7 but runs with our torch, so it goes in without its dependencies (pip must never touch torch); einops,
# the one light module it imports that we lack, comes with the test extra.
python -m pip install -q --no-deps "ltx-core==1.0.0"
