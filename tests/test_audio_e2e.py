"""Audio products end to end on Ray (issue 15): an audio-only job (t2a: no video anywhere but the transformer's
one-token placeholder) and a v2a job (video frozen, audio generated), each through intake, Ray Data
preprocessing, Ray Train and export, each returning its previews as an audio reel with labels and spectrograms."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import pytest

from ltxtrain.jobs import JobOptions, run_job
from ltxtrain.sampledata import write_video

from test_audio_products import write_audio

pytestmark = pytest.mark.ray


def _dataset(tmp_path_factory, name: str, files: dict, payload: dict, validation) -> tuple[Path, dict]:
    """(data folder, request) of one job: the archive and whatever the validation entries point at."""
    data = tmp_path_factory.mktemp(name)
    z = data / "d.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i, (arc, make) in enumerate(files.items()):
            p = data / arc
            make(p, i)
            f.write(p, arc)
    return data, {"training_data_url": str(z), "number_of_steps": 100, "rank": 8, "validation": validation(data),
                  **payload}


def _t2a(tmp_path_factory):
    files = {f"hum_{i}.wav": (lambda p, i: write_audio(p, 1.3, freq=200.0 + 50 * i)) for i in range(2)}
    files["hum_2.flac"] = lambda p, i: write_audio(p, 1.3, freq=330.0)
    return _dataset(tmp_path_factory, "t2a", files, {"audio_duration_seconds": 1.0, "debug_dataset": True},
                    lambda d: [{"prompt": "a low hum"}])


def _v2a(tmp_path_factory):
    clip = lambda p, i: write_video(str(p), 0.8, 25, 160, 96, seed=i, audio="stereo48k")  # noqa: E731

    def validation(d):
        write_video(str(d / "val.mp4"), 0.8, 25, 160, 96, seed=9)  # a silent video to score
        return [{"prompt": "a clip", "video_url": str(d / "val.mp4")}]

    return _dataset(tmp_path_factory, "v2a", {"a.mp4": clip, "b.mp4": clip},
                    {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 17, "frame_rate": 25,
                     "validation_resolution": "low", "validation_aspect_ratio": "16:9",
                     "validation_number_of_frames": 17, "validation_frame_rate": 25}, validation)


@pytest.fixture(scope="module")
def audio_jobs(ray_cluster, tmp_path_factory):
    """{"t2a": (out, result), "v2a": (out, result)}. Each job trains with one worker, i.e. one of the head node's two
    CPUs, so the two run side by side: v2a through the CLI (`ltxtrain train ... --address`) in a second driver
    process, t2a in this one; each is then checked from its own outputs."""
    from ltxtrain.api.result import TrainingResult

    (t2a_dir, t2a_req), (v2a_dir, v2a_req) = _t2a(tmp_path_factory), _v2a(tmp_path_factory)
    (v2a_dir / "request.json").write_text(json.dumps(v2a_req))
    cmd = [sys.executable, "-m", "ltxtrain.cli", "train", "v2a", str(v2a_dir / "request.json"), "--out",
           str(v2a_dir / "out"), "--address", ray_cluster["address"], "--workers", "1", "--cpu"]
    with open(v2a_dir / "driver.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=ray_cluster["env"], stdout=log, stderr=subprocess.STDOUT)
        try:
            t2a = run_job("t2a", t2a_req, str(t2a_dir / "out"), JobOptions(model="tiny", num_workers=1, use_gpu=False))
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0, (v2a_dir / "driver.log").read_text()[-6000:]
    v2a = TrainingResult.model_validate_json((v2a_dir / "out" / "result.json").read_text())
    return {"t2a": (t2a_dir / "out", t2a), "v2a": (v2a_dir / "out", v2a)}


@pytest.fixture(scope="module")
def t2a_job(audio_jobs):
    return audio_jobs["t2a"]


@pytest.fixture(scope="module")
def v2a_job(audio_jobs):
    return audio_jobs["v2a"]


def _audio_preview(out, result, seconds: float):
    data = json.loads((out / "result.json").read_text())
    assert data["video"] is None and data["audio"]["content_type"] == "audio/wav"
    labels = json.loads((out / result.audio_labels.file_name).read_text())
    assert len(labels["segments"]) == 4  # one preview per quarter of the run, one entry
    assert all(s["end"] - s["start"] == pytest.approx(seconds, abs=0.1) for s in labels["segments"])
    assert [s.file_name for s in result.spectrograms] == [s["spectrogram"] for s in labels["segments"]]
    assert all((out / s["spectrogram"]).stat().st_size > 0 for s in labels["segments"])
    with wave.open(str(out / result.audio.file_name)) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(labels["segments"][-1]["end"], abs=0.01)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_t2a_trains_audio_alone_and_previews_sound(t2a_job):
    out, result = t2a_job
    rows = _audio_preview(out, result, 1.0)
    assert result.samples == 3 and result.with_audio
    assert all("loss_audio" in r and "loss_video" not in r for r in rows)  # the placeholder is never a loss
    assert result.metrics["probe_audio_end"] < result.metrics["probe_audio_start"]
    from safetensors.torch import load_file

    keys = load_file(str(out / result.lora_file.file_name)).keys()
    assert keys and all(".audio_attn" in k or ".audio_ff" in k for k in keys)


def test_v2a_generates_audio_for_a_frozen_video_and_previews_sound(v2a_job):
    out, result = v2a_job
    rows = _audio_preview(out, result, 17 / 25)
    assert all("loss_audio" in r and "loss_video" not in r for r in rows)
    assert result.metrics["probe_audio_end"] < result.metrics["probe_audio_start"]



def test_t2a_debug_dataset_shows_each_fitted_clip_as_sound_over_its_spectrogram(t2a_job):
    out, result = t2a_job
    with zipfile.ZipFile(out / result.debug_dataset.file_name) as z:
        clips = [n for n in z.namelist() if n.endswith("target.mp4")]
        assert len(clips) == 3
        z.extract(clips[0], out / "dbg")
    from ltxtrain.export.reel import read_reel

    clip = read_reel(str(out / "dbg" / clips[0]))
    assert clip["audio"] is not None and clip["audio"].shape[1] / clip["audio_rate"] == pytest.approx(1.0, abs=0.05)
