#!/usr/bin/env bash
# Set up (if needed), generate a sample dataset and run a whole t2v job on local Ray with the tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 RAY_DISABLE_USAGE_STATS=1
mkdir -p out/demo
ltxtrain sample-data out/demo/dataset.zip --request out/demo/request.json -n 4 --seconds 2
ltxtrain train t2v out/demo/request.json --out out/demo/result --model tiny --workers 2
echo "outputs in out/demo/result (result.json, LoRA, config, metrics.jsonl, loss_curve.png)"
echo "validation reel (previews at 25/50/75/100 % of the run): out/demo/result/t2v_validation.mp4"
