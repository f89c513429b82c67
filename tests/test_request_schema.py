"""The request contract of the t2v spec: defaults, ranges, snapping, named errors."""

from __future__ import annotations

import pytest

from ltxtrain.api.errors import RequestError
from ltxtrain.api.schema import snap_frames
from ltxtrain.products import get_recipe

T2V = get_recipe("t2v")
URL = "file:///data.zip"


def parse(**fields):
    return T2V.parse({"training_data_url": URL, **fields})


def errors_of(**fields) -> list[dict]:
    with pytest.raises(RequestError) as info:
        parse(**fields)
    return info.value.to_json()["errors"]


def test_defaults_match_spec():
    r = parse()
    assert (r.rank, r.number_of_steps, r.learning_rate) == (32, 2000, 2e-4)
    assert (r.number_of_frames, r.frame_rate, r.resolution, r.aspect_ratio) == (89, 25, "medium", "1:1")
    assert r.with_audio is None and r.generate_audio_in_validation and r.audio_normalize and r.audio_preserve_pitch
    assert r.first_frame_conditioning_p == 0.5 and r.trigger_phrase == "" and not r.auto_scale_input
    assert r.split_input_into_scenes and r.split_input_duration_threshold == 30.0
    assert r.validation == [] and r.validation_number_of_frames == 89 and r.validation_frame_rate == 25
    assert (r.validation_resolution, r.validation_aspect_ratio, r.stg_scale) == ("high", "1:1", 1.0)
    assert r.validation_negative_prompt.startswith("worst quality")
    assert r.size == (768, 768) and r.validation_size == (960, 960)


@pytest.mark.parametrize("res,ar,size", [("low", "16:9", (512, 288)), ("medium", "9:16", (448, 768)),
                                         ("high", "16:9", (960, 544)), ("high", "1:1", (960, 960))])
def test_resolution_table(res, ar, size):
    assert parse(resolution=res, aspect_ratio=ar).size == size


@pytest.mark.parametrize("given,snapped", [(9, 9), (10, 9), (16, 9), (17, 17), (90, 89), (96, 89), (121, 121)])
def test_frames_snap_down_to_8k_plus_1(given, snapped):
    assert snap_frames(given) == snapped
    r = parse(number_of_frames=given, validation_number_of_frames=given)
    assert r.number_of_frames == snapped and r.validation_number_of_frames == snapped


@pytest.mark.parametrize("field,value", [
    ("rank", 4), ("rank", 33), ("rank", 256),
    ("number_of_steps", 99), ("number_of_steps", 20001),
    ("learning_rate", 1e-7), ("learning_rate", 1.5),
    ("number_of_frames", 8), ("number_of_frames", 122),
    ("frame_rate", 7), ("frame_rate", 61),
    ("resolution", "ultra"), ("aspect_ratio", "4:3"),
    ("first_frame_conditioning_p", -0.1), ("first_frame_conditioning_p", 1.1),
    ("split_input_duration_threshold", 0.5), ("split_input_duration_threshold", 61),
    ("validation_number_of_frames", 8), ("validation_number_of_frames", 122),
    ("validation_frame_rate", 7), ("validation_frame_rate", 61),
    ("validation_resolution", "x"), ("validation_aspect_ratio", "2:1"),
    ("stg_scale", -0.5), ("stg_scale", 3.5),
    ("with_audio", "maybe"), ("auto_scale_input", "often"),
])
def test_out_of_range_fields_are_named(field, value):
    errs = errors_of(**{field: value})
    assert [e["loc"] for e in errs] == [["body", field]]
    assert field in errs[0]["msg"]


def test_missing_url_and_unknown_field_are_named():
    with pytest.raises(RequestError) as info:
        T2V.parse({"learning_rat": 0.1})
    locs = {tuple(e["loc"]) for e in info.value.to_json()["errors"]}
    assert ("body", "training_data_url") in locs and ("body", "learning_rat") in locs


def test_validation_entries():
    assert len(parse(validation=[{"prompt": "a"}, {"prompt": "b"}]).validation) == 2
    errs = errors_of(validation=[{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    assert errs[0]["loc"] == ["body", "validation"]
    errs = errors_of(validation=[{"prompt": "a", "image_url": "http://x/a.png"}, {"prompt": "b"}])
    assert "image_url" in errs[0]["msg"]
    parse(validation=[{"prompt": "a", "image_url": "http://x/a.png"}, {"prompt": "b", "image_url": "http://x/b.png"}])


def test_unknown_endpoint_is_named():
    with pytest.raises(RequestError) as info:
        get_recipe("v2v-magic")
    err = info.value.to_json()["errors"][0]
    assert err["loc"] == ["endpoint"] and "v2v-magic" in err["msg"] and "t2v" in err["msg"]


def test_request_must_be_an_object():
    with pytest.raises(RequestError):
        T2V.parse(["not", "an", "object"])
