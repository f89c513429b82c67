"""Joint audio-video t2v: with_audio resolution, audio that follows the video timeline, and training both."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from ltxtrain.api.errors import Diagnostics, RequestError
from ltxtrain.encode.audio_encoder import audio_latent_steps
from ltxtrain.encode.pipeline import PreprocessConfig, audio_sample_rate, preprocess
from ltxtrain.jobs import check, intake
from ltxtrain.sampledata import write_video

from conftest import JOINT_TRACKS

SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 17, "frame_rate": 24, "rank": 8,
         "learning_rate": 2e-3, "number_of_steps": 100}


def make_zip(tmp: Path, clips: dict[str, dict]) -> str:
    z = tmp / "audio.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i, (name, kw) in enumerate(clips.items()):
            p = tmp / name
            write_video(str(p), kw.get("seconds", 1.0), kw.get("fps", 25), 160, 96, seed=i, audio=kw.get("audio"))
            f.write(p, name)
            f.writestr(Path(name).stem + ".txt", "a red square with a sound")
    return str(z)


@pytest.fixture(scope="module")
def mixed_audio_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("az")
    return make_zip(d, {"stereo.mp4": {"audio": "stereo48k"}, "mono.mp4": {"audio": "mono44k"},
                        "silent.mp4": {"audio": "silent"}})


def test_with_audio_auto_detects_and_forced_audio_names_missing_tracks(mixed_audio_zip, tmp_path):
    assert check("t2v", {"training_data_url": mixed_audio_zip, **SMALL})["with_audio"] is True
    assert check("t2v", {"training_data_url": mixed_audio_zip, **SMALL, "with_audio": False})["with_audio"] is False
    z = make_zip(tmp_path, {"has.mp4": {"audio": "stereo48k"}, "none.mp4": {}})
    out = check("t2v", {"training_data_url": z, **SMALL})
    assert out["with_audio"] is False and any("none.mp4" in w for w in out["warnings"])
    with pytest.raises(RequestError) as info:
        check("t2v", {"training_data_url": z, **SMALL, "with_audio": True})
    errs = info.value.to_json()["errors"]
    assert [e["loc"] for e in errs] == [["body", "training_data_url", "none.mp4"]]


@pytest.mark.parametrize("case", ["resampled_30_to_24", "auto_scaled_short"])
def test_audio_length_follows_the_kept_frames(ray_cluster, tiny_model, tmp_path, case):
    if case == "resampled_30_to_24":
        z = make_zip(tmp_path, {"c.mp4": {"seconds": 1.5, "fps": 30, "audio": "stereo48k"}})
        extra = {}
    else:
        z = make_zip(tmp_path, {"c.mp4": {"seconds": 0.4, "fps": 25, "audio": "mono44k"}})
        extra = {"auto_scale_input": True}
    job = intake("t2v", {"training_data_url": z, **SMALL, **extra}, str(tmp_path / "work"))
    assert job.audio
    sr = audio_sample_rate(tiny_model)
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(tmp_path / "cache"), width=256, height=128,
                           num_frames=17, frame_rate=24, auto_scale=bool(extra), audio=True, audio_sample_rate=sr)
    manifest = preprocess(job.samples, cfg, Diagnostics())
    seconds = 17 / 24  # the kept video's duration
    steps = manifest.samples[0].audio_shape[0]
    assert steps == audio_latent_steps(seconds, sr)
    assert abs(steps - 25 * seconds) <= 1.5  # within one audio latent step (25/s) of the video's duration


@pytest.fixture(scope="module")
def audio_job(joint_validation_job):
    """The session's joint audio+video t2v job (conftest): 2 workers, three clips with a stereo 48 kHz, a mono
    44.1 kHz and a silent track. It also renders previews (test_validation.py) and starts from an initial LoRA
    (test_quality_gate.py); what is checked here (both modalities trained, both losses fall) holds either way."""
    out, result, _ = joint_validation_job
    return out, result


def test_audio_video_job_reports_both_losses_and_both_fall(audio_job):
    out, result = audio_job
    data = json.loads((out / "result.json").read_text())
    assert data["with_audio"] is True and data["samples"] == len(JOINT_TRACKS) == 3 and data["billing_units"] == 100
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_video" in r and "loss_audio" in r for r in rows)
    m = result.metrics
    assert m["probe_video_end"] < 0.9 * m["probe_video_start"], m
    assert m["probe_audio_end"] < 0.9 * m["probe_audio_start"], m


def test_audio_lora_targets_audio_and_cross_modal_modules(audio_job):
    from safetensors.torch import load_file

    out, result = audio_job
    keys = load_file(str(out / result.lora_file.file_name)).keys()
    for module in ("attn1.to_q", "audio_attn1.to_q", "audio_ff.net.2", "audio_to_video_attn.to_k",
                   "video_to_audio_attn.to_v"):
        assert any(f".{module}.lora_A.weight" in k for k in keys), module
