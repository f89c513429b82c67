"""A job on a multi-node cluster (`ray.cluster_utils.Cluster`): a head without CPUs (nothing trains there), the Train
workers on other nodes, storage on a local S3 server (moto, as tests/test_storage.py). The node running the Train
workers is lost mid-run (`remove_node`); Ray Train restarts the group on the remaining node from the newest
checkpoint on S3, and the run finishes with the uninterrupted run's losses (the session's clean run of the same job,
conftest.clean_resume_run, which test_fault_tolerance.py compares its killed worker with too).

The cluster lives in a subprocess: this session's process is already connected to the session's Ray head node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

from conftest import RESUME_OPTIONS, RESUME_REQUEST

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, threading, time
from pathlib import Path

import ray
import ray._private.state
from ray.cluster_utils import Cluster

from ltxtrain.jobs import JobOptions, run_job

import socket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_ports():
    # fixed default ports would collide with other Ray instances on this machine
    return {"metrics_export_port": free_port(), "runtime_env_agent_port": free_port(),
            "dashboard_agent_listen_port": free_port()}


dataset, root, temp_dir, payload, opts = sys.argv[1], Path(sys.argv[2]), sys.argv[3], *map(json.loads, sys.argv[4:6])
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 0, "gcs_server_port": free_port(), "include_dashboard": False, "temp_dir": temp_dir, **own_ports()})
workers = [cluster.add_node(num_cpus=2, **own_ports()) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)

payload = {"training_data_url": dataset, **payload}
opts = dict(opts, storage="s3://bucket/multinode")
out = {}


def lose_the_training_node():
    # Once step 30 is logged (the step-25 checkpoint is on S3), remove the node whose CPUs the Train workers hold:
    # the head has none, so they run on a worker node.
    metrics = root / "crashed" / "metrics.jsonl"
    end = time.monotonic() + 900
    while time.monotonic() < end:
        rows = [json.loads(l) for l in metrics.read_text().splitlines()] if metrics.exists() else []
        if rows and rows[-1]["step"] >= 30:
            free = ray._private.state.available_resources_per_node()
            busiest = min(workers, key=lambda n: free.get(n.node_id, {}).get("CPU", 0.0))
            out["lost_at_step"] = rows[-1]["step"]
            out["lost_node_busy_cpus"] = 2 - free.get(busiest.node_id, {}).get("CPU", 0.0)
            cluster.remove_node(busiest)
            return
        time.sleep(0.2)


killer = threading.Thread(target=lose_the_training_node, daemon=True)
killer.start()
crashed = run_job("t2v", payload, str(root / "crashed"), JobOptions(**opts))
killer.join(5)
out.update(crashed_step=crashed.metrics["step"], resumed_from=crashed.metrics.get("resumed_from_step"),
           nodes_alive=sum(1 for n in ray.nodes() if n["Alive"]))
print("RESULT " + json.dumps(out), flush=True)
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.ray
def test_losing_a_worker_node_mid_run_resumes_on_another_node_with_the_same_losses(tmp_path, tiny_model,
                                                                                  resume_dataset, clean_resume_run):
    from moto import server as moto_server
    from pyarrow import fs as pafs

    clean_out, clean = clean_resume_run  # the same job, uninterrupted (same clips, request, seed, 2 workers)
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    raytmp = Path(tempfile.mkdtemp(prefix="ltxmn", dir="/tmp"))  # short: Ray's socket paths have a length limit
    (raytmp / "ray").mkdir()  # where Cluster writes the address file under RAY_TMPDIR
    try:
        host, port = s3.get_host_and_port()
        pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="testing",
                          secret_key="testing", region="us-east-1", allow_bucket_creation=True).create_dir("bucket")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "platform"), "AWS_ENDPOINT_URL": f"http://{host}:{port}",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", "RAY_TMPDIR": str(raytmp)}
        for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "RAY_ADDRESS",
                    "LTXTRAIN_STORAGE"):
            env.pop(key, None)
        proc = subprocess.run([sys.executable, "-c", SCRIPT, resume_dataset, str(tmp_path), str(raytmp),
                               json.dumps(RESUME_REQUEST), json.dumps(RESUME_OPTIONS)],
                              cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1500)
    finally:
        s3.stop()
        shutil.rmtree(raytmp, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["lost_node_busy_cpus"] >= 1, out  # the lost node held Train workers
    assert out["crashed_step"] == 100 and out["resumed_from"] in (25, 50, 75), out
    assert clean.metrics["resumed_from_step"] == 0
    rows = {name: {r["step"]: r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())}
            for name, folder in (("clean", clean_out), ("crashed", tmp_path / "crashed"))}
    assert sorted(rows["crashed"]) == list(range(10, 101, 10))
    # Rows average the loss over their 10 steps: from the first row whose steps all ran after the resume, the
    # uninterrupted run's trajectory (same data, noise and optimizer state)
    first = -(-(out["resumed_from"] + 10) // 10) * 10
    assert first <= 60, out
    for step in range(first, 101, 10):
        a, b = rows["clean"][step]["loss"], rows["crashed"][step]["loss"]
        assert abs(a - b) < 1e-3 * max(1.0, a), (step, a, b)
