"""Validation previews during training, the reel, the debug dataset, progress outputs."""

from __future__ import annotations

import json
import zipfile

import av
import pytest
import torch

from ltxtrain.api.errors import RequestError
from ltxtrain.jobs import JobOptions, run_job

from conftest import JOINT_CAPTION, JOINT_TRACKS, VALIDATION_REQUEST as SMALL, audio_zip


@pytest.fixture(scope="module")
def job_with_validation(joint_validation_job):
    """The session's joint audio+video job with two image-conditioned previews and the debug dataset (conftest; it
    starts from an initial LoRA, which test_quality_gate.py checks, and test_audio_training.py checks its losses)."""
    out, result, _ = joint_validation_job
    return out, result


def test_reel_holds_every_preview_with_labels_and_audio(job_with_validation):
    from ltxtrain.export.reel import read_reel

    out, result = job_with_validation
    assert result.video is not None and result.video.content_type == "video/mp4"
    reel = read_reel(str(out / result.video.file_name))
    frames = reel["frames"]
    # previews at steps 25, 50, 75, 100 for 2 prompts, 9 frames each
    assert frames.shape[0] == 4 * 2 * 9
    assert frames.shape[2] == 512 and frames.shape[1] >= 288  # picture plus the label band
    band = frames[:, : frames.shape[1] - 288]
    assert band.shape[1] > 0 and (band.reshape(len(frames), -1).max(axis=1) > 128).all()  # a label on every frame
    assert reel["audio"] is not None and reel["audio"].shape[0] == 2
    assert abs(reel["audio"].shape[1] / reel["audio_rate"] - len(frames) / reel["fps"]) < 0.25


def test_image_conditioned_sampling_keeps_the_image_latents_as_first_frame(tiny_model):
    """What image_url previews rely on: the first latent frame stays the image's latents at every step."""
    from ltxtrain.conditioning.kinds import FirstFrame
    from ltxtrain.conditioning.tokens import TextContext
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components
    from ltxtrain.sample.sampler import sample_latents

    parts = load_components(tiny_model, ["transformer", "tokenizer", "text_encoder", "connectors"])
    tr = parts["transformer"].eval()
    text = TextContext(*encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], ["a cat"], 32))
    image_latents = torch.randn(1, tr.config.in_channels, 1, 2, 3)
    clean = torch.zeros(1, tr.config.in_channels, 3, 2, 3)
    clean[:, :, :1] = image_latents
    video, _ = sample_latents(tr, text, (3, 2, 3), 25.0, steps=5, conditions=(FirstFrame(p=0.5),),
                              cols={"first_frame": image_latents}, generator=torch.Generator().manual_seed(0))
    assert torch.equal(video[:, :, :1], image_latents)
    assert not torch.allclose(video[:, :, 1:], clean[:, :, 1:])


def test_progress_outputs(job_with_validation):
    out, result = job_with_validation
    assert result.loss_curve is not None and (out / "loss_curve.png").stat().st_size > 1000
    from PIL import Image

    assert Image.open(out / "loss_curve.png").size == (800, 400)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "loss_video", "loss_audio", "lr", "step_time"} <= set(rows[0])


def test_debug_archive_matches_the_training_samples(job_with_validation):
    out, result = job_with_validation
    assert result.debug_dataset is not None
    with zipfile.ZipFile(out / result.debug_dataset.file_name) as z:
        index = json.loads(z.read("index.json"))
        assert index["count"] == len(JOINT_TRACKS)  # one clip per audio track kind
        for entry in index["samples"]:
            info = json.loads(z.read(f"{entry['folder']}/info.json"))
            assert info["caption"] == JOINT_CAPTION and info["tokens"]["video"] == 2 * 9 * 16
            assert info["tokens"]["audio"] > 0
            data = z.read(f"{entry['folder']}/target.mp4")
            path = out / "clip.mp4"
            path.write_bytes(data)
            with av.open(str(path)) as c:
                vs = c.streams.video[0]
                decoded = [f for f in c.decode(vs)]
                assert (decoded[0].width, decoded[0].height, len(decoded)) == (512, 288, 9)
                assert len(c.streams.audio) == 1


def test_validation_url_errors_are_named(ray_cluster, tmp_path):
    req = {"training_data_url": audio_zip(tmp_path), **SMALL,
           "validation": [{"prompt": "x", "image_url": str(tmp_path / "missing.png")}]}
    with pytest.raises(RequestError) as info:
        run_job("t2v", req, str(tmp_path / "out"), JobOptions(model="tiny", num_workers=2, use_gpu=False))
    assert info.value.to_json()["errors"][0]["loc"] == ["body", "validation", 0, "image_url"]
    assert json.loads((tmp_path / "out" / "result.json").read_text())["billing_units"] == 0


def test_stg_changes_previews_and_the_seed_reproduces_them(tiny_model):
    from ltxtrain.conditioning.tokens import TextContext
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components
    from ltxtrain.sample.sampler import Guidance, default_stg_blocks, sample_latents

    parts = load_components(tiny_model, ["transformer", "tokenizer", "text_encoder", "connectors"])
    tr = parts["transformer"].eval()
    enc = lambda p: TextContext(*encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], [p], 32))  # noqa: E731
    text, negative = enc("a red square"), enc("blurry")

    def run(stg: float, seed: int):
        g = Guidance(cfg=3.0, stg=stg, stg_blocks=default_stg_blocks(tr))
        v, a = sample_latents(tr, text, (2, 2, 3), 25.0, steps=4, audio_steps=5, negative=negative, guidance=g,
                              generator=torch.Generator().manual_seed(seed))
        return torch.cat([v.flatten(), a.flatten()])

    assert torch.equal(run(1.0, 7), run(1.0, 7))
    assert not torch.allclose(run(0.0, 7), run(1.0, 7))
