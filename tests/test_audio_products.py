"""The audio side of the family (issue 15), product by product, in-process: intake rules and 422s named by field
or file; the frozen modality bit-exact through sampling and out of the loss; audio-only samples with a one-token
video placeholder isolated from audio; an overfit through the shared loop and sampler for t2a, v2a and a2v."""

from __future__ import annotations

import json
import wave
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ltxtrain.api.errors import RequestError
from ltxtrain.jobs import check
from ltxtrain.products import get_recipe
from ltxtrain.sampledata import write_video

SMALL_AV = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "frame_rate": 25, "rank": 8,
            "number_of_steps": 100}


def write_audio(path: Path, seconds: float, freq: float = 440.0, rate: int = 22050, silent: bool = False) -> None:
    """A stereo tone (or silence) as .wav (stdlib) or any other extension through PyAV."""
    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t) if silent else 0.5 * np.sin(2 * np.pi * freq * t)
    pcm = (np.stack([x, x], 1) * 32767).astype(np.int16)
    if path.suffix == ".wav":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        return
    with av.open(str(path), "w") as out:
        s = out.add_stream({".flac": "flac", ".mp3": "libmp3lame", ".m4a": "aac"}[path.suffix], rate=rate)
        s.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = rate
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def make_zip(tmp: Path, files: dict[str, object], name: str = "d.zip") -> str:
    """{archive name: seconds of tone | "silent:<s>" | "corrupt" | "video:<s>" | "avideo:<s>" | "image" | str text}."""
    from PIL import Image

    z = tmp / name
    with zipfile.ZipFile(z, "w") as f:
        for i, (arc, spec) in enumerate(files.items()):
            p = tmp / f"{name}_{arc}"
            if arc.endswith((".txt", ".json")):
                f.writestr(arc, spec)
                continue
            if spec == "corrupt":
                p.write_bytes(b"RIFF\x00\x00not audio at all" * 10)
            elif spec == "image":
                Image.fromarray(np.full((96, 160, 3), 128, np.uint8)).save(p)
            elif isinstance(spec, str) and spec.startswith(("video:", "avideo:")):
                kind, secs = spec.split(":")
                write_video(str(p), float(secs), 25, 160, 96, seed=i, audio="stereo48k" if kind == "avideo" else None)
            elif isinstance(spec, str) and spec.startswith("silent:"):
                write_audio(p, float(spec[7:]), silent=True)
            else:
                write_audio(p, float(spec), freq=220.0 + 40 * i)
            f.write(p, arc)
    return str(z)


def errors(endpoint: str, payload: dict) -> list[dict]:
    with pytest.raises(RequestError) as info:
        check(endpoint, payload)
    return info.value.to_json()["errors"]


def locs(errs: list[dict]) -> list[tuple]:
    return [tuple(e["loc"]) for e in errs]


# ------------------------------------------------------------------------------------------------------ intake
def test_t2a_takes_every_audio_format_skips_short_clips_and_has_no_video_fields(tmp_path):
    z = make_zip(tmp_path, {"a.wav": 1.2, "a.txt": "a hum", "b.flac": 1.2, "c.mp3": 1.3, "d.m4a": 1.2,
                            "short.wav": 0.5})
    ok = check("t2a", {"training_data_url": z, "audio_duration_seconds": 1.0})
    assert sorted(s["files"]["target"] for s in ok["samples"]) == ["a.wav", "b.flac", "c.mp3", "d.m4a"]
    assert [s["name"] for s in ok["skipped"]] == ["short.wav"] and "audio_duration_seconds" in ok["skipped"][0]["reason"]
    assert ok["with_audio"] is True
    errs = errors("t2a", {"training_data_url": z, "audio_duration_seconds": 5.0})  # every clip too short
    assert locs(errs) == [("body", "training_data_url")]
    for bad in ({"number_of_frames": 9}, {"resolution": "low"}, {"audio_duration_seconds": 0.5}):
        assert locs(errors("t2a", {"training_data_url": z, **bad})) == [("body", next(iter(bad)))]


def test_audio_only_products_name_corrupt_silent_and_video_members(tmp_path):
    errs = errors("t2a", {"training_data_url": make_zip(tmp_path, {"a.wav": 1.2, "bad.wav": "corrupt"}, "c.zip"),
                          "audio_duration_seconds": 1.0})
    assert locs(errs) == [("body", "training_data_url", "bad.wav")]
    errs = errors("t2a", {"training_data_url": make_zip(tmp_path, {"a.wav": 1.2, "quiet.flac": "silent:1.2"}, "s.zip"),
                          "audio_duration_seconds": 1.0})
    assert locs(errs) == [("body", "training_data_url", "quiet.flac")] and "silent" in errs[0]["msg"]
    errs = errors("t2a", {"training_data_url": make_zip(tmp_path, {"a.wav": 1.2, "v.mp4": "avideo:1.2"}, "v.zip"),
                          "audio_duration_seconds": 1.0})
    assert locs(errs) == [("body", "training_data_url", "v.mp4")]


def test_a2a_pairs_audio_files_and_skips_a_pair_with_a_short_side(tmp_path):
    z = make_zip(tmp_path, {"a_start.wav": 1.2, "a_end.flac": 1.2, "b_start.wav": 0.4, "b_end.wav": 1.2,
                            "c_end.wav": 1.2})
    errs = errors("a2a", {"training_data_url": z, "audio_duration_seconds": 1.0})
    assert locs(errs) == [("body", "training_data_url", "c_end.wav")] and "_start" in errs[0]["msg"]
    z = make_zip(tmp_path, {"a_start.wav": 1.2, "a_end.flac": 1.2, "b_start.wav": 0.4, "b_end.wav": 1.2}, "p.zip")
    ok = check("a2a", {"training_data_url": z, "audio_duration_seconds": 1.0})
    assert [s["files"] for s in ok["samples"]] == [{"target": "a_end.flac", "reference": "a_start.wav"}]
    assert [s["name"] for s in ok["skipped"]] == ["b_start.wav"]
    with pytest.raises(RequestError) as info:
        get_recipe("a2a").parse({"training_data_url": "x", "validation": [{"prompt": "p"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "reference_audio_url")]


def test_audio_inpaint_needs_a_json_mask_per_clip_and_names_a_bad_one(tmp_path):
    z = make_zip(tmp_path, {"a.wav": 1.2, "a_mask.json": "[[0.2, 0.6]]", "b.wav": 1.2})
    errs = errors("audio-inpaint", {"training_data_url": z, "audio_duration_seconds": 1.0})
    assert locs(errs) == [("body", "training_data_url", "b.wav")] and "_mask" in errs[0]["msg"]
    ok = check("audio-inpaint", {"training_data_url": make_zip(tmp_path, {"a.wav": 1.2, "a_mask.json": "[[0.2, 0.6]]"},
                                                               "ok.zip"), "audio_duration_seconds": 1.0})
    assert ok["samples"][0]["files"] == {"target": "a.wav", "audio_mask": "a_mask.json"}
    # a JSON file is not a member of products without JSON roles: ignored there, with a warning
    assert check("t2a", {"training_data_url": make_zip(tmp_path, {"a.wav": 1.2, "x.json": "[]"}, "j.zip"),
                         "audio_duration_seconds": 1.0})["accepted"]


@pytest.mark.parametrize("text,why", [("[[0.6, 0.2]]", "start < end"), ("{\"a\": 1}", "list of [start, end]"),
                                      ("[[0.2, 0.6]", "not valid JSON")])
def test_audio_mask_json_rules(tmp_path, text, why):
    from ltxtrain.conditioning.kinds import read_audio_spans

    p = tmp_path / "m.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=why.replace("[", r"\[")):
        read_audio_spans(str(p), 4.0)


def test_audio_spans_become_a_keep_mask_over_25_per_second_steps():
    from ltxtrain.conditioning.kinds import audio_step_mask

    regen = audio_step_mask([[0.2, 0.4], [float("nan"), float("nan")]], 25)
    assert regen.nonzero().flatten().tolist() == [5, 6, 7, 8, 9]  # t = 0.20 .. 0.36 s


def test_audio_extend_window_must_leave_something_to_generate():
    for endpoint in ("audio-extend-prefix", "audio-extend-suffix"):
        recipe = get_recipe(endpoint)
        with pytest.raises(RequestError) as info:
            recipe.parse({"training_data_url": "x", "audio_duration_seconds": 2.0, "conditioning_seconds": 2.0})
        assert locs(info.value.to_json()["errors"]) == [("body", "conditioning_seconds")]
        bound = recipe.bind(recipe.parse({"training_data_url": "x", "conditioning_seconds": 1.0}), True)
        assert bound.video == "absent" and bound.items[0].steps(100) == 25


def test_v2a_needs_a_track_on_every_clip_and_freezes_the_video(tmp_path):
    z = make_zip(tmp_path, {"a.mp4": "avideo:0.5", "b.mp4": "video:0.5"})
    errs = errors("v2a", {"training_data_url": z, **SMALL_AV})
    assert locs(errs) == [("body", "training_data_url", "b.mp4")] and "no audio track" in errs[0]["msg"]
    recipe = get_recipe("v2a")
    bound = recipe.bind(recipe.parse({"training_data_url": "x"}), True)
    assert (bound.video, bound.audio) == ("frozen", "generated")
    assert all(t.startswith(("audio_", "video_to_audio_attn")) for t in recipe.lora_targets(None, True))
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "validation": [{"prompt": "p"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "video_url")]


def test_a2v_groups_start_audio_end_and_names_a_missing_audio_source(tmp_path):
    files = {"a_start.png": "image", "a_audio.wav": 1.0, "a_end.mp4": "video:0.5", "a.txt": "cap",
             "b_start.mp4": "avideo:0.5", "b_end.mp4": "video:0.5", "b.txt": "cap"}
    ok = check("a2v", {"training_data_url": make_zip(tmp_path, files), **SMALL_AV})
    assert [s["files"] for s in ok["samples"]] == [
        {"target": "a_end.mp4", "first_frame_image": "a_start.png", "given_audio": "a_audio.wav"},
        {"target": "b_end.mp4", "first_frame_image": "b_start.mp4"}]  # the `_end` clips are silent: never read
    bad = {"c_start.png": "image", "c_end.mp4": "video:0.5", "c.txt": "cap"}
    errs = errors("a2v", {"training_data_url": make_zip(tmp_path, bad, "b.zip"), **SMALL_AV})
    assert locs(errs) == [("body", "training_data_url", "c_start.png")] and "no audio" in errs[0]["msg"]
    errs = errors("a2v", {"training_data_url": make_zip(tmp_path, {**files, "b.txt": None} if False else
                                                        {k: v for k, v in files.items() if k != "b.txt"}, "n.zip"),
                          **SMALL_AV})
    assert locs(errs) == [("body", "training_data_url", "b.txt")]  # captions required without a trigger phrase
    recipe = get_recipe("a2v")
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "validation": [{"prompt": "p", "image_url": "i"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "audio_url")]
    assert not any(t.startswith("audio_attn") for t in recipe.lora_targets(None, True))
