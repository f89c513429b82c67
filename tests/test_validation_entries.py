"""Validation entries are fitted and encoded by the training samples' own code (in-process, no Ray): at the same
geometry an entry's columns equal a training sample's bit for bit, and unusable inputs are 422s naming the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ltxtrain.api.errors import RequestError
from ltxtrain.encode.cache import from_bytes
from ltxtrain.products import get_recipe
from ltxtrain.sampledata import write_video
from ltxtrain.sample.validation import ValidationItem, encode_entry


def item(**kw) -> ValidationItem:
    return ValidationItem(index=0, prompt="p", text_id="t", negative_text_id="n", width=256, height=128,
                          num_frames=9, fps=25.0, **kw)


@pytest.fixture
def triplet(tmp_path):
    write_video(str(tmp_path / "a_end.mp4"), 0.5, 25, 160, 96, seed=1)
    write_video(str(tmp_path / "a_start.mp4"), 0.5, 25, 160, 96, seed=2)
    m = np.zeros((96, 160, 3), np.uint8)
    m[20:70, 30:120] = 255
    Image.fromarray(m).save(tmp_path / "a_mask.png")
    return {"target": str(tmp_path / "a_end.mp4"), "reference": str(tmp_path / "a_start.mp4"),
            "mask": str(tmp_path / "a_mask.png")}


def test_a_masked_entry_encodes_exactly_like_the_training_sample(tiny_model, triplet):
    from ltxtrain.encode.encoders import encode_columns
    from ltxtrain.encode.pipeline import PreprocessConfig, decode_row, plan_sample
    from ltxtrain.models.bundle import load_components

    recipe = get_recipe("ic-lora/v2v-masked")
    conditions = recipe.bind(recipe.parse({"training_data_url": "x"}), False)
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir="", width=256, height=128, num_frames=9, frame_rate=25,
                           split_scenes=False, conditions=conditions.items)
    row = {"name": "a_end.mp4", "path": triplet["target"], "kind": "video", "caption": "", "text_id": "t",
           "media": json.dumps({"reference": triplet["reference"], "mask": triplet["mask"]})}
    [planned] = plan_sample(row, cfg)
    assert planned["skip"] == ""
    fitted = decode_row({**planned, "id": "s"}, cfg)
    vae = load_components(tiny_model, ["vae"])["vae"]
    training = encode_columns(vae, None, {k: v for k, v in fitted.items() if k != "id"})

    fields = {role: name for name, role in recipe.validation_roles().items()}
    entry = from_bytes(encode_entry(tiny_model, item(), triplet, conditions, fields))
    assert set(entry) == set(training) == {"latents", "reference", "mask"}
    for k in entry:
        assert torch.equal(entry[k], training[k]), k


def test_entry_inputs_that_cannot_be_used_are_named(tiny_model, triplet, tmp_path):
    recipe = get_recipe("ic-lora/v2v-masked")
    conditions = recipe.bind(recipe.parse({"training_data_url": "x"}), False)
    fields = {role: name for name, role in recipe.validation_roles().items()}
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(RequestError) as info:
        encode_entry(tiny_model, item(), {**triplet, "mask": str(broken)}, conditions, fields)
    assert info.value.to_json()["errors"][0]["loc"] == ["body", "validation", 0, "mask_url"]


def test_an_extension_entry_with_audio_encodes_its_opening_window_and_needs_a_track(tiny_model, tmp_path):
    from ltxtrain.encode.audio_encoder import model_audio_steps

    recipe = get_recipe("extend-prefix")
    conditions = recipe.bind(recipe.parse({"training_data_url": "x", "with_audio": True}), True)
    fields = {role: name for name, role in recipe.validation_roles().items()}
    write_video(str(tmp_path / "v.mp4"), 0.5, 25, 160, 96, seed=1, audio="stereo48k")
    entry = from_bytes(encode_entry(tiny_model, item(), {"target": str(tmp_path / "v.mp4")}, conditions, fields))
    assert set(entry) == {"latents", "audio"} and entry["latents"].shape[1:] == (2, 4, 8)
    assert entry["audio"].shape[0] == model_audio_steps(tiny_model, 9 / 25)
    write_video(str(tmp_path / "silent.mp4"), 0.5, 25, 160, 96, seed=1)
    with pytest.raises(RequestError) as info:
        encode_entry(tiny_model, item(), {"target": str(tmp_path / "silent.mp4")}, conditions, fields)
    assert info.value.to_json()["errors"][0]["loc"] == ["body", "validation", 0, "video_url"]
