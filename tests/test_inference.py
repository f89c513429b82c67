"""Inference for every product through the validation sampler (`ltxtrain.sample.inference`), in-process with the
tiny model: the engine directly, no Ray."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from ltxtrain.export.lora_file import save_lora
from ltxtrain.models.bundle import load_components
from ltxtrain.models.lora import AUDIO_TARGETS, VIDEO_TARGETS, attach_lora, lora_parameters, lora_state_dict
from ltxtrain.sampledata import write_video

GEO = {"prompt": "tinystyle a red square", "width": 128, "height": 64, "number_of_frames": 9, "frame_rate": 24,
       "num_inference_steps": 2, "guidance_scale": 1.0}


@pytest.fixture(scope="module")
def engine(tiny_model, ltx_home):
    from serve.inference import InferenceEngine

    eng = InferenceEngine("tiny", str(ltx_home), allow_private_urls=True)  # local test media are plain paths
    yield eng


def _lora(model_dir, path, metadata=None, targets=VIDEO_TARGETS + AUDIO_TARGETS) -> str:
    tr = load_components(model_dir, ["transformer"])["transformer"]
    attach_lora(tr, 4, targets)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora_parameters(tr):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    save_lora(str(path), lora_state_dict(tr), 4, 4, metadata=metadata, dtype=torch.float32)
    return str(path)


@pytest.fixture(scope="module")
def lora(tiny_model, tmp_path_factory) -> str:
    return _lora(tiny_model, tmp_path_factory.mktemp("lora") / "plain.safetensors")


def _frames(data: bytes) -> tuple[set, list]:
    import av

    with av.open(io.BytesIO(data)) as container:
        kinds = {s.type for s in container.streams}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return kinds, frames


def test_t2v_returns_an_mp4_with_video_and_audio(engine, lora):
    out = engine.generate("t2v", {**GEO, "lora_url": lora}, {"path": lora})
    assert "errors" not in out, out
    assert out["media_type"] == "video/mp4"
    kinds, frames = _frames(out["data"])
    assert kinds == {"video", "audio"} and len(frames) == 9 and frames[0].shape == (64, 128, 3)


def test_i2v_conditions_on_the_image_and_requires_it(engine, lora, tmp_path):
    img = tmp_path / "first.png"
    Image.fromarray(np.full((64, 128, 3), (200, 30, 30), np.uint8)).save(img)
    out = engine.generate("i2v", {**GEO, "lora_url": lora, "image_url": str(img), "with_audio": False},
                          {"path": lora})
    assert "errors" not in out, out
    kinds, frames = _frames(out["data"])
    assert kinds == {"video"} and len(frames) == 9
    missing = engine.generate("i2v", {**GEO, "lora_url": lora}, {"path": lora})
    assert missing["errors"][0]["loc"] == ["body", "image_url"]


def test_conditioned_requests_load_no_model_parts(engine, lora, tmp_path, monkeypatch):
    """Condition media are encoded by the engine's own VAEs: nothing is read from the model folder per request, and
    the same request gives the same bytes twice."""
    import ltxtrain.models.bundle as bundle

    loads = []
    real = bundle.load_components
    monkeypatch.setattr(bundle, "load_components", lambda *a, **kw: loads.append(a[1]) or real(*a, **kw))
    img = tmp_path / "first.png"
    Image.fromarray(np.full((64, 128, 3), (30, 200, 30), np.uint8)).save(img)
    body = {**GEO, "lora_url": lora, "image_url": str(img), "with_audio": False, "seed": 3}
    first, second = (engine.generate("i2v", body, {"path": lora}) for _ in range(2))
    assert "errors" not in first, first
    assert loads == [] and first["data"] == second["data"]


def test_ic_lora_reference_scaling_comes_from_the_loras_metadata(engine, tiny_model, tmp_path, monkeypatch):
    import ltxtrain.media.reference as reference

    scaled = []
    real = reference.scale_reference
    monkeypatch.setattr(reference, "scale_reference",
                        lambda frames, s, t: scaled.append((s, t)) or real(frames, s, t))
    ic = _lora(tiny_model, tmp_path / "ic.safetensors", {"reference_downscale_factor": "2",
                                                        "reference_temporal_scale_factor": "1"}, VIDEO_TARGETS)
    ref = tmp_path / "ref.mp4"
    write_video(str(ref), 0.5, 24, 128, 64, seed=1)
    body = {**GEO, "lora_url": ic, "reference_video_url": str(ref), "with_audio": False}
    out = engine.generate("ic-lora/v2v", body, {"path": ic})
    assert "errors" not in out, out
    assert scaled == [(2, 1)]  # the request names no factor: the file's metadata does
    assert len(_frames(out["data"])[1]) == 9
    # the request may not set it: it is a property of the LoRA
    extra = engine.generate("ic-lora/v2v", {**body, "reference_downscale_factor": 1}, {"path": ic})
    assert extra["errors"][0]["loc"] == ["body", "reference_downscale_factor"]
    # a geometry the LoRA's factor cannot take is a 422 naming it
    odd = engine.generate("ic-lora/v2v", {**body, "width": 96}, {"path": ic})
    assert odd["errors"][0]["loc"] == ["body", "reference_downscale_factor"]


def test_inpaint_keeps_the_unmasked_latent_cells_bit_exact(engine, lora, tmp_path, monkeypatch):
    import ltxtrain.sample.sampler as sampler

    seen = {}
    real = sampler.sample_latents

    def spy(*args, **kw):
        video, audio = real(*args, **kw)
        seen.update(cols=kw["cols"], video=video)
        return video, audio

    monkeypatch.setattr(sampler, "sample_latents", spy)
    clip, mask = tmp_path / "clip.mp4", tmp_path / "mask.png"
    write_video(str(clip), 0.5, 24, 128, 64, seed=2)
    m = np.zeros((64, 128), np.uint8)
    m[:, 64:] = 255  # WHITE (right half) regenerates, BLACK is kept
    Image.fromarray(m).save(mask)
    out = engine.generate("inpaint", {**GEO, "lora_url": lora, "video_url": str(clip), "mask_url": str(mask),
                                      "with_audio": False}, {"path": lora})
    assert "errors" not in out, out
    cols, video = seen["cols"], seen["video"]
    regen = cols["mask"][0].bool()  # [F, H, W] latent cells to regenerate
    kept = ~regen
    assert kept.any() and regen.any()
    given = cols["latents"][0]  # [C, F, H, W]
    assert torch.equal(video[0][:, kept], given[:, kept])
    assert not torch.equal(video[0][:, regen], given[:, regen])
    missing = engine.generate("inpaint", {**GEO, "lora_url": lora, "video_url": str(clip)}, {"path": lora})
    assert missing["errors"][0]["loc"] == ["body", "mask_url"]


def test_v2a_and_t2a_answer_with_a_wav(engine, lora, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_video(str(clip), 0.5, 24, 128, 64, seed=3)
    audio_only = {"prompt": "a low hum", "num_inference_steps": 2, "guidance_scale": 1.0, "duration": 1.0}
    for endpoint, body, seconds in (("v2a", {**GEO, "video_url": str(clip)}, 9 / 24), ("t2a", audio_only, 1.0)):
        out = engine.generate(endpoint, {**body, "lora_url": lora}, {"path": lora})
        assert "errors" not in out, (endpoint, out)
        assert out["media_type"] == "audio/wav"
        with wave.open(io.BytesIO(out["data"])) as w:
            assert w.getnchannels() == 2 and w.getsampwidth() == 2
            assert w.getnframes() / w.getframerate() == pytest.approx(seconds, abs=0.1)
    sized = engine.generate("t2a", {**audio_only, "lora_url": lora, "width": 128}, {"path": lora})
    assert sized["errors"][0]["loc"] == ["body", "width"]  # no video is made: refused, not ignored


def test_a_private_media_url_is_refused_naming_the_field(engine, lora):
    engine.allow_private_urls = False
    try:
        out = engine.generate("i2v", {**GEO, "lora_url": lora, "image_url": "http://127.0.0.1:9/a.png"},
                              {"path": lora})
    finally:
        engine.allow_private_urls = True
    assert out["errors"][0]["loc"] == ["body", "image_url"]


# ------------------------------------------------------------------------------------------------ the route
def _app(tmp_path, home, allow_private: bool):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.config import ServeConfig

    config = ServeConfig(db_path=str(tmp_path / f"jobs{allow_private}.db"), out_root=str(tmp_path / "jobs"),
                         tokens={"t": "alice"}, allow_private_urls=allow_private, home=str(home))
    return TestClient(create_app(config))  # no lifespan: no job runner, inference in-process


def test_the_route_answers_wav_for_v2a_and_refuses_private_media_urls(ltx_home, lora, tmp_path):
    auth = {"Authorization": "Key t"}
    clip = tmp_path / "clip.mp4"
    write_video(str(clip), 0.5, 24, 128, 64, seed=4)
    client = _app(tmp_path, ltx_home, allow_private=True)
    r = client.post("/inference/v2a", json={**GEO, "lora_url": lora, "video_url": str(clip)}, headers=auth)
    assert r.status_code == 200, r.text[:2000]
    assert r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
    strict = _app(tmp_path, ltx_home, allow_private=False)
    r = strict.post("/inference/v2a", json={**GEO, "lora_url": "https://example.com/l.safetensors",
                                            "video_url": "http://10.0.0.1/clip.mp4"}, headers=auth)
    # every URL is checked (this sandbox may not resolve the LoRA's host either): the private one is named
    assert r.status_code == 422 and ["body", "video_url"] in [e["loc"] for e in r.json()["detail"]]
