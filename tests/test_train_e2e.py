"""The whole t2v job on local Ray with the tiny model, submitted with `ray job submit`: preprocessing, 2-worker FSDP2
training, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ltxtrain.api.errors import Diagnostics
from ltxtrain.encode.pipeline import PreprocessConfig, plan_sample, preprocess
from ltxtrain.jobs import intake
from ltxtrain.sampledata import make_dataset_zip, write_video

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "rank": 8, "learning_rate": 2e-3,
         "number_of_steps": 100, "trigger_phrase": "tinystyle"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    return make_dataset_zip(str(d / "clips.zip"), kind="video", n=3, seconds=1.0, fps=25, width=200, height=120)


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuts")
    path = str(d / "long.mp4")
    write_video(path, 40.0, 25, 128, 96, seed=5, cuts=(10.0, 20.0, 30.0))
    return path


def test_long_clip_with_cuts_becomes_one_sample_per_scene(ray_cluster, tiny_model, cut_clip, tmp_path):
    import zipfile

    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.write(cut_clip, "long.mp4")
        f.writestr("long.txt", "a red square")
    job = intake("t2v", {"training_data_url": str(z), **SMALL}, str(tmp_path / "work"))
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(tmp_path / "cache"), width=512, height=288,
                           num_frames=9, frame_rate=25)
    manifest = preprocess(job.samples, cfg, job.diag)
    names = [s.name for s in manifest.samples]
    assert len(names) == 4 and all(n.startswith("long.mp4 [scene ") for n in names)
    assert all(s.caption == "tinystyle a red square" for s in manifest.samples)
    assert len({s.text_id for s in manifest.samples}) == 1  # one caption encoded once
    assert all(s.latent_shape[1:] == [2, 9, 16] for s in manifest.samples)  # (9-1)/8+1 frames, 288/32, 512/32
    # a re-run finds everything cached (resume) and gives the same manifest
    again = preprocess(job.samples, cfg, Diagnostics())
    assert [s.id for s in again.samples] == [s.id for s in manifest.samples]
    # below the threshold (or with splitting off) the clip stays whole
    row = {"name": "long.mp4", "path": cut_clip, "ref_path": "", "kind": "video", "caption": "", "text_id": "t"}
    whole = PreprocessConfig(**{**cfg.__dict__, "split_threshold": 60.0})
    assert len(plan_sample(row, whole)) == 1


@pytest.fixture(scope="module")
def trained(ray_cluster, tiny_model, dataset, tmp_path_factory):
    """The t2v job as a user runs it on a cluster: `ray job submit` of jobs/train.py (which calls run_job in the
    job's driver). The tests below check its outputs; result.json is the TrainingResult run_job returned there."""
    from ltxtrain.api.result import TrainingResult

    d = tmp_path_factory.mktemp("job")
    out = d / "submitted"
    req = d / "request.json"
    req.write_text(json.dumps({"training_data_url": dataset, **SMALL}))
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", ray_cluster["dashboard"],
           "--working-dir", str(ROOT), "--", "python", "jobs/train.py", "t2v", str(req), "--out", str(out),
           "--workers", "2", "--cpu"]
    env = {**ray_cluster["env"], "HF_HUB_OFFLINE": "1", "LTXTRAIN_HOME": os.environ["LTXTRAIN_HOME"]}
    for _ in range(5):  # the dashboard's job agent can lag behind the head node's start on a loaded machine
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
        if "No available agent to submit job" not in proc.stderr + proc.stdout:
            break
        time.sleep(10)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, TrainingResult.model_validate_json((out / "result.json").read_text())


def test_t2v_job_writes_outputs_and_bills(trained):
    out, result = trained
    data = json.loads((out / "result.json").read_text())
    assert data["billing_units"] == 100 and data["samples"] == 3 and data["number_of_steps"] == 100
    for key in ("lora_file", "config_file"):
        f = data[key]
        assert Path(f["url"].removeprefix("file://")).exists() and f["file_size"] > 0 and f["file_name"]
    assert data["video"] is None and data["debug_dataset"] is None
    cfg = json.loads((out / data["config_file"]["file_name"]).read_text())
    assert cfg["trigger_phrase"] == "tinystyle" and cfg["rank"] == 8 and cfg["training_type"] == "lora"
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 100 and len(rows) == 10 and all(r["loss"] > 0 for r in rows)
    assert result.metrics["world_size"] == 2


def test_loss_on_fixed_batch_falls(trained):
    _, result = trained
    m = result.metrics
    assert m["probe_loss_end"] < 0.8 * m["probe_loss_start"], m


def test_lora_file_layout(trained):
    from safetensors.torch import load_file

    out, result = trained
    sd = load_file(str(out / result.lora_file.file_name))
    assert sd and all(k.startswith("diffusion_model.transformer_blocks.") for k in sd)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in sd)
    assert not any(k.startswith("diffusion_model.transformer_blocks.0.audio_") for k in sd)  # video-only job
    a = next(v for k, v in sd.items() if k.endswith("attn1.to_q.lora_A.weight"))
    assert a.shape[0] == 8
    assert any(v.abs().sum() > 0 for k, v in sd.items() if "lora_B" in k)


def test_lora_loads_into_diffusers_pipeline_and_changes_output(trained, tiny_model):
    from ltxtrain.export.lora_file import load_lora_into_pipeline
    from ltxtrain.models.bundle import build_pipeline

    out, result = trained
    pipe = build_pipeline(tiny_model)
    kwargs = dict(prompt="tinystyle a red square", negative_prompt="", height=64, width=64, num_frames=9,
                  frame_rate=25.0, num_inference_steps=2, output_type="pt", guidance_scale=1.0, stg_scale=0.0,
                  audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, audio_guidance_scale=1.0,
                  guidance_rescale=0.0, audio_guidance_rescale=0.0, max_sequence_length=32)
    base = pipe(generator=torch.Generator().manual_seed(0), **kwargs).frames
    load_lora_into_pipeline(pipe, str(out / result.lora_file.file_name))
    tuned = pipe(generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert base.shape == tuned.shape
    assert (base - tuned).abs().max() > 1e-4


def test_same_job_through_ray_job_submit(trained):
    # the job behind `trained` is submitted through Ray's Jobs API (the tests above check all of its outputs)
    out, result = trained
    data = json.loads((out / "result.json").read_text())
    assert data["billing_units"] == 100 and data["lora_file"]["file_size"] > 0
    assert result.endpoint == "t2v" and result.metrics["world_size"] == 2
