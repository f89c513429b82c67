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
