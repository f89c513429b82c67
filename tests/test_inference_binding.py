"""Inference binds a LoRA's conditions as they were trained: the request fields its conditions read travel in the
LoRA's metadata (`Recipe.lora_metadata`, what the export writes) and come back through
`sample.inference.bind_conditions`, not as the training request's defaults. No model: conditions only."""

from __future__ import annotations

import pytest

from ltxtrain.api.errors import RequestError
from ltxtrain.conditioning.kinds import AudioWindow, Keyframe, Prefix, SpatialKeep, Suffix
from ltxtrain.products import get_recipe
from ltxtrain.sample.inference import bind_conditions, parse_inference

LORA = {"prompt": "p", "lora_url": "lora.safetensors"}


def trained_metadata(endpoint: str, **fields) -> dict[str, str]:
    recipe = get_recipe(endpoint)
    request = recipe.parse({"training_data_url": "data.zip", **fields})
    return recipe.lora_metadata(request, recipe.bind(request, False))


def bound(endpoint: str, metadata: dict[str, str], **params):
    recipe = get_recipe(endpoint)
    return bind_conditions(recipe, parse_inference(recipe, {**LORA, **params}), metadata)


def test_extend_uses_the_trained_conditioning_frames_not_the_default():
    meta = trained_metadata("extend-prefix", conditioning_frames=17)
    assert meta["conditioning_frames"] == "17"
    prefix = bound("extend-prefix", meta, video_url="v.mp4", number_of_frames=25).find(Prefix)
    assert prefix.latent_frames == 3  # the default (57 frames) would pin 8 and not fit 25 frames at all
    suffix = bound("extend-suffix", trained_metadata("extend-suffix", conditioning_frames=24), video_url="v.mp4",
                   number_of_frames=49).find(Suffix)
    assert suffix.latent_frames == 3
    # a LoRA from before this metadata existed still binds with the defaults
    assert bound("extend-prefix", {}, video_url="v.mp4", number_of_frames=89).find(Prefix).latent_frames == 8


def test_a_geometry_the_trained_frames_do_not_fit_names_the_training_parameter():
    meta = trained_metadata("extend-prefix", conditioning_frames=33)
    with pytest.raises(RequestError) as err:
        bound("extend-prefix", meta, video_url="v.mp4", number_of_frames=25)
    item = err.value.errors[0]
    assert item.loc == ("body", "conditioning_frames") and "a training parameter of this LoRA" in item.msg


def test_outpaint_keeps_the_trained_rectangle_scaled_to_the_inference_frame():
    meta = trained_metadata("outpaint", crop_top_left=[64, 128], crop_bottom_right=[512, 640])  # of 768x768
    keep = bound("outpaint", meta, video_url="v.mp4", width=384, height=384, number_of_frames=9).find(SpatialKeep)
    assert keep.rect == (64, 128, 512, 640) and keep.size == (768, 768)
    assert keep.cells(12, 12) == (1, 2, 8, 10)  # the centred default would give (2, 2, 10, 10)
    default = bound("outpaint", {}, video_url="v.mp4", width=384, height=384, number_of_frames=9).find(SpatialKeep)
    assert default.cells(12, 12) == (2, 2, 10, 10)


def test_interpolate_and_audio_extend_follow_their_training_fields():
    with_middle = bound("interpolate", trained_metadata("interpolate", use_middle_keyframe=True),
                        start_image_url="a.png", end_image_url="b.png", middle_image_url="m.png")
    assert [k.position for k in with_middle.items if isinstance(k, Keyframe)] == ["last", "middle"]
    without = bound("interpolate", {}, start_image_url="a.png", end_image_url="b.png")
    assert [k.position for k in without.items if isinstance(k, Keyframe)] == ["last"]
    meta = trained_metadata("audio-extend-suffix", conditioning_seconds=1.5)
    window = bound("audio-extend-suffix", meta, audio_url="a.wav", duration=4.0).find(AudioWindow)
    assert float(window.seconds) == 1.5 and window.side == "suffix"
