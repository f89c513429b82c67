"""Shared fixtures: one Ray cluster for the whole session (started like a real head node, so `ray job submit`
works against it too), a private LTXTRAIN_HOME, and the tiny model built once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The session's throwaway head node listens on this machine only; token auth would make every client (this
# process, `ray job submit`, the job's driver) share a token file that parallel sessions can overwrite.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_collection_modifyitems(config, items):
    """Every test that needs the shared Ray head is a Ray test, so `pytest -m "not ray"` is the fast tier
    whether or not its author remembered the marker."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ltx_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("ltxtrain_home")
    os.environ["LTXTRAIN_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model(ltx_home) -> str:
    from ltxtrain.models.bundle import resolve_model

    return resolve_model("tiny", str(ltx_home / "models"))


@pytest.fixture(scope="session")
def ray_cluster(ltx_home, tmp_path_factory):
    """A local head node (`ray start --head`) with its dashboard, shared by every test that needs Ray."""
    import ray

    temp_dir = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), os.environ.get("PYTHONPATH", "")])}
    for attempt in range(3):  # a randomly picked internal port can collide with another Ray on this machine
        port, dash = _free_port(), _free_port()
        # every fixed default port (the dashboard agent's 52365 above all) gets a free one, so sessions running
        # side by side on one machine do not steal each other's agents
        extra = [f"--{flag}={_free_port()}" for flag in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
            "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=2",
               "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
               f"--temp-dir={temp_dir}", "--disable-usage-stats", *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if proc.returncode == 0:
            break
        _stop_cluster(temp_dir)
    else:
        raise RuntimeError(f"ray start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    address = f"127.0.0.1:{port}"
    ray.init(address=address, log_to_driver=False)
    info = {"address": address, "dashboard": f"http://127.0.0.1:{dash}", "env": env}
    try:
        yield info
    finally:
        ray.shutdown()
        _stop_cluster(temp_dir)


# The uninterrupted reference run of the resume tests: a killed worker (test_fault_tolerance.py) and a lost node
# (test_multinode.py) must each continue on exactly this trajectory. Both crash the same job (same clips, request,
# seed and worker count), so one clean run serves both.
RESUME_REQUEST = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "rank": 8,
                  "learning_rate": 2e-3, "number_of_steps": 100}
RESUME_OPTIONS = dict(model="tiny", num_workers=2, use_gpu=False, checkpoint_every=25)


@pytest.fixture(scope="session")
def resume_dataset(tmp_path_factory) -> str:
    from ltxtrain.sampledata import make_dataset_zip

    d = tmp_path_factory.mktemp("resume_data")
    return make_dataset_zip(str(d / "clips.zip"), kind="video", n=3, seconds=0.6, fps=25, width=160, height=96)


@pytest.fixture(scope="session")
def clean_resume_run(ray_cluster, tiny_model, resume_dataset, tmp_path_factory):
    """(out dir, TrainingResult) of the uninterrupted t2v run of RESUME_REQUEST on `resume_dataset`."""
    from ltxtrain.jobs import JobOptions, run_job

    out = tmp_path_factory.mktemp("resume_clean") / "clean"
    result = run_job("t2v", {"training_data_url": resume_dataset, **RESUME_REQUEST}, str(out),
                     JobOptions(**RESUME_OPTIONS))
    return out, result


# One joint audio+video t2v job (2 workers) on three clips whose tracks differ (stereo 48 kHz, mono 44.1 kHz,
# silent), with image-conditioned validation previews and the debug dataset, that continues from an initial LoRA on
# every video, audio and cross-modal target. test_audio_training.py checks that it trains both modalities,
# test_validation.py its previews, reel, progress outputs and debug archive, test_quality_gate.py its export gate,
# the per-modality LoRA files and how the initial LoRA is recorded. No file's checks depend on another's options.
VALIDATION_REQUEST = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "frame_rate": 25, "rank": 8,
                      "learning_rate": 2e-3, "number_of_steps": 100, "validation_resolution": "low",
                      "validation_aspect_ratio": "16:9", "validation_number_of_frames": 9,
                      "validation_frame_rate": 25}
JOINT_TRACKS = ("stereo48k", "mono44k", "silent")  # one clip each
JOINT_CAPTION = "a red square with a tone"


def audio_zip(tmp: Path, tracks=JOINT_TRACKS) -> str:
    """0.6 s clips, one per audio kind in `tracks`, with one caption."""
    import zipfile

    from ltxtrain.sampledata import write_video

    z = tmp / "av.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i, track in enumerate(tracks):
            p = tmp / f"clip_{i}.mp4"
            write_video(str(p), 0.6, 25, 160, 96, seed=i, audio=track)
            f.write(p, p.name)
            f.writestr(f"clip_{i}.txt", JOINT_CAPTION)
    return str(z)


def write_init_lora(model_dir: str, path: Path, rank: int = 8) -> str:
    """A LoRA on every video, audio and cross-modal target whose B are no longer zero (an effect of its own)."""
    import torch

    from ltxtrain.export.lora_file import save_lora
    from ltxtrain.models.bundle import load_components
    from ltxtrain.models.lora import (AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS, attach_lora,
                                      lora_parameters, lora_state_dict)

    tr = load_components(model_dir, ["transformer"])["transformer"]
    attach_lora(tr, rank, VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS)
    with torch.no_grad():
        for p in lora_parameters(tr):
            p.mul_(0.5).add_(0.001)
    save_lora(str(path), lora_state_dict(tr), rank, rank)
    return str(path)


@pytest.fixture(scope="session")
def joint_validation_job(ray_cluster, tiny_model, tmp_path_factory):
    """(out dir, TrainingResult, initial LoRA path) of the job described above."""
    from ltxtrain.jobs import JobOptions, run_job
    from ltxtrain.sampledata import write_image

    d = tmp_path_factory.mktemp("val")
    image = d / "start.png"
    write_image(str(image), 320, 180, seed=3)
    init = write_init_lora(tiny_model, d / "init.safetensors")
    req = {"training_data_url": audio_zip(d), **VALIDATION_REQUEST, "debug_dataset": True, "init_lora_url": init,
           "validation": [{"prompt": "a red square", "image_url": str(image)},
                          {"prompt": "a blue circle", "image_url": image.as_uri()}]}
    out = d / "out"
    result = run_job("t2v", req, str(out), JobOptions(model="tiny", num_workers=2, use_gpu=False))
    return out, result, init


def _stop_cluster(temp_dir) -> None:
    """Stop only this session's head node (`ray stop` would also kill any other Ray on the machine): its
    processes are the ones started with our temp dir; their workers exit with the raylet."""
    import signal

    mine = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if str(temp_dir).encode() in fh.read():
                    mine.append(int(pid))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(2)


@pytest.fixture
def write_request(tmp_path):
    def _write(payload: dict, name: str = "request.json") -> str:
        path = tmp_path / name
        path.write_text(json.dumps(payload))
        return str(path)

    return _write


def wait_for(predicate, timeout: float, interval: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
