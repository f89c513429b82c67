"""bench/gpu.sh --dry-run: every GPU case (and the scaling command) runs once on CPU with the tiny model. The
scaling command joins the session's Ray head node (RAY_ADDRESS) rather than starting a Ray of its own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = ["t2v", "t2v-nockpt", "t2v-ckpt2", "t2v-compile", "ic", "av"]


@pytest.mark.ray
def test_gpu_script_dry_run_runs_every_case(tmp_path, ltx_home, ray_cluster):
    env = {**ray_cluster["env"], "OUT": str(tmp_path / "out"), "LTXTRAIN_HOME": str(ltx_home),
           "RAY_ADDRESS": ray_cluster["address"]}
    proc = subprocess.run(["bash", "bench/gpu.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {c: json.loads((tmp_path / "out" / f"{c}.json").read_text()) for c in CASES}
    for case, r in results.items():
        assert "error" not in r, (case, r)
        assert r["model"] == "tiny" and r["step_s_median"] > 0 and r["step_tflop"] > 0, case
    assert results["t2v"]["grad_ckpt"] and not results["t2v-nockpt"]["grad_ckpt"]
    assert results["t2v-ckpt2"]["ckpt_every"] == 2 and results["t2v-compile"]["compile"]
    assert results["ic"]["reference_tokens"] > 0 and results["av"]["audio_tokens"] > 0
    # checkpointing keeps fewer activations than none
    assert results["t2v"]["saved_activations_gib"] < results["t2v-nockpt"]["saved_activations_gib"]
    assert "train" in (tmp_path / "out" / "scaling.log").read_text()
    for case in CASES:
        assert case in proc.stdout  # the summary table
