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
    uncaptioned = {k: v for k, v in files.items() if k != "b.txt"}
    errs = errors("a2v", {"training_data_url": make_zip(tmp_path, uncaptioned, "n.zip"), **SMALL_AV})
    assert locs(errs) == [("body", "training_data_url", "b.txt")]  # captions required without a trigger phrase
    recipe = get_recipe("a2v")
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "validation": [{"prompt": "p", "image_url": "i"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "audio_url")]
    assert not any(t.startswith("audio_attn") for t in recipe.lora_targets(None, True))


# ------------------------------------------------------------------------------------------------------ tokens
def _tiny(tiny_model):
    from ltxtrain.models.bundle import load_components

    return load_components(tiny_model, ["transformer"])["transformer"].eval()


def _text(tiny_model, caption: str = "a low hum"):
    from ltxtrain.conditioning.tokens import TextContext
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components

    parts = load_components(tiny_model, ["tokenizer", "text_encoder", "connectors"])
    return TextContext(*encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], [caption], 32))


def _audio_clip(steps: int, channels: int) -> torch.Tensor:
    """Smooth, structured packed audio latents [L, Ca] (a learnable 'sound')."""
    g = torch.Generator().manual_seed(7)
    return torch.randn(1, channels, generator=g) + 0.3 * torch.sin(torch.arange(steps)[:, None] / 3.0) * torch.randn(
        1, channels, generator=g)


def _video_clip(c, f, h, w):
    g = torch.Generator().manual_seed(5)
    return torch.randn(c, 1, h, w, generator=g) + 0.3 * torch.arange(f).view(1, f, 1, 1) * torch.randn(c, 1, h, w,
                                                                                                      generator=g)


def test_audio_only_placeholder_video_is_isolated_from_audio_and_out_of_the_loss(tiny_model):
    from ltxtrain.conditioning.kinds import ConditionSet
    from ltxtrain.conditioning.tokens import assemble, predict

    tr = _tiny(tiny_model)
    text = _text(tiny_model)
    c, ca = tr.config.in_channels, tr.config.audio_in_channels
    cols = {"latents": torch.zeros(1, c, 1, 1, 1), "audio": _audio_clip(12, ca)[None]}
    sigma = torch.tensor([0.7])
    kw = dict(noise=torch.randn(1, 1, c), audio_sigma=sigma, audio_noise=torch.randn(1, 12, ca), video_role="absent")
    video, audio = assemble((), tr.rope, tr.audio_rope, cols, sigma, 25.0, **kw)
    assert video.placeholder and video.hidden.shape[1] == 1 and video.cond.all() and float(video.sigma) == 0.0
    assert not audio.cond.any() and torch.equal(audio.sigma, sigma)
    with torch.no_grad():
        _, out = predict(tr, video, text, audio)
        video.hidden = torch.randn_like(video.hidden) * 10  # whatever the placeholder holds, audio never sees it
        _, again = predict(tr, video, text, audio)
    assert torch.equal(out, again)

    from ltxtrain.train.data import Batch
    from ltxtrain.train.loop import draw_step, flow_loss

    batch = Batch(cols={k: v for k, v in cols.items()}, text_video=text.video, text_audio=text.audio,
                  text_mask=text.mask, fps=25.0, names=["a"])
    for roles, keys in ((("absent", "generated"), ["audio"]), (("frozen", "generated"), ["audio"]),
                        (("generated", "frozen"), ["video"]), (("generated", "generated"), ["video", "audio"])):
        cs = ConditionSet(video=roles[0], audio=roles[1])
        draw = draw_step(batch, torch.Generator().manual_seed(0), cs)
        with torch.no_grad():
            assert sorted(flow_loss(tr, batch, draw, torch.device("cpu"), cs)) == sorted(keys), roles


def _write_cache(tmp_path, tiny_model, conditions, cols, text, caption="a low hum"):
    from ltxtrain.encode.cache import CachedSample, LatentCache, Manifest

    cache = LatentCache(tmp_path / "cache")
    cache.write_text("t", text.video[0], text.audio[0], text.mask[0])
    cache.write_video("s", **cols)
    c, f, h, w = cols["latents"].shape
    cache.write_manifest(Manifest(tiny_model, w * 32, h * 32, 8 * (f - 1) + 1, 25.0, audio="audio" in cols,
                                  conditions=[x.to_json() for x in conditions.items],
                                  samples=[CachedSample("s", "s", caption, "t", [c, f, h, w], 8 * (f - 1) + 1, 25.0,
                                                        audio_shape=list(cols["audio"].shape))]))
    return str(cache.root)


# endpoint -> (video grid of the clip, None = audio-only, preview columns given beside the text)
AUDIO_OVERFIT = {
    "t2a": None,
    "v2a": (2, 2, 3),
    "a2v": (3, 2, 4),  # two generated latent frames after the given start frame
}


@pytest.mark.parametrize("endpoint", list(AUDIO_OVERFIT))
def test_overfit_the_generated_modality_while_the_frozen_one_stays_bit_exact(tiny_model, tmp_path, endpoint):
    """Train a LoRA on one clip (the real loop, in-process), then sample through the shared sampler with the
    product's roles: the given modality comes back bit for bit, the generated one approaches the clip."""
    from ltxtrain.models.lora import attach_lora, load_lora_state_dict
    from ltxtrain.sample.sampler import sample_latents
    from ltxtrain.train.config import TrainConfig
    from ltxtrain.train.loop import LORA_FILE, WorkerContext, run_worker
    from safetensors.torch import load_file

    recipe = get_recipe(endpoint)
    conditions = recipe.bind(recipe.parse({"training_data_url": "x"}), True)
    targets = recipe.lora_targets(None, True)
    base = _tiny(tiny_model)
    text = _text(tiny_model)
    c, ca = base.config.in_channels, base.config.audio_in_channels
    grid = AUDIO_OVERFIT[endpoint] or (1, 1, 1)
    lat = _video_clip(c, *grid) if AUDIO_OVERFIT[endpoint] else torch.zeros(c, 1, 1, 1)
    aud = _audio_clip(8 * (grid[0] - 1) + 1 if AUDIO_OVERFIT[endpoint] else 12, ca)
    cols = {"latents": lat, "audio": aud}
    given = {}
    if endpoint == "v2a":
        given = {"latents": lat[None]}
    elif endpoint == "a2v":
        cols["first_frame"] = lat[:, :1]
        given = {"audio": aud[None], "first_frame": lat[None, :, :1]}
    cache_dir = _write_cache(tmp_path, tiny_model, conditions, cols, text)
    cfg = TrainConfig(model_dir=tiny_model, cache_dir=cache_dir, steps=120, learning_rate=1e-2, rank=16,
                      lora_targets=targets, conditions=conditions.to_json(), seed=0, progress=False, log_every=40)
    saved = {}
    run_worker(cfg, WorkerContext(), lambda m, d: saved.update(lora=load_file(str(Path(d) / LORA_FILE))) if d else None)

    def generate(transformer) -> float:
        video, audio = sample_latents(transformer, text, grid, 25.0, steps=10, conditions=conditions.items,
                                      cols=given, audio_steps=aud.shape[0], generator=torch.Generator().manual_seed(0),
                                      audio_role=conditions.audio, video_role=conditions.video)
        if conditions.video == "frozen":
            assert torch.equal(video[0], lat)  # the given video, bit for bit
        if conditions.audio == "frozen":
            assert torch.equal(audio[0], aud)  # the given track, bit for bit
            assert torch.equal(video[0, :, :1], lat[:, :1])  # and the start frame
            return torch.mean((video[0, :, 1:] - lat[:, 1:]) ** 2).item()
        return torch.mean((audio[0] - aud) ** 2).item()

    before = generate(base)
    attach_lora(base, 16, targets)
    load_lora_state_dict(base, saved["lora"])
    after = generate(base.eval())
    assert after < 0.6 * before, (before, after)


AUDIO_ONLY_OVERFIT = {  # endpoint -> (request fields, audio steps given clean)
    "audio-inpaint": ({}, [i for i in range(25) if not 5 <= i < 10]),  # the mask regenerates [0.2 s, 0.4 s)
    "audio-extend-prefix": ({"conditioning_seconds": 0.2}, list(range(5))),
    "audio-extend-suffix": ({"conditioning_seconds": 0.2}, list(range(20, 25))),
    "a2a": ({}, []),  # the reference rides along appended; the whole target is generated
}


@pytest.mark.parametrize("endpoint", list(AUDIO_ONLY_OVERFIT))
def test_overfit_audio_only_conditions_generate_toward_the_clip_and_keep_the_given_steps(tiny_model, tmp_path,
                                                                                          endpoint):
    """The audio-only conditioned products through the real loop and the shared sampler: after training on one
    clip, the generated steps move toward it and the given steps come back bit for bit."""
    from ltxtrain.conditioning.kinds import MAX_AUDIO_SPANS
    from ltxtrain.models.lora import attach_lora, load_lora_state_dict
    from ltxtrain.sample.sampler import sample_latents
    from ltxtrain.train.config import TrainConfig
    from ltxtrain.train.loop import LORA_FILE, WorkerContext, run_worker
    from safetensors.torch import load_file

    payload, kept = AUDIO_ONLY_OVERFIT[endpoint]
    recipe = get_recipe(endpoint)
    conditions = recipe.bind(recipe.parse({"training_data_url": "x", "audio_duration_seconds": 1.0, **payload}), True)
    targets = recipe.lora_targets(None, True)
    base = _tiny(tiny_model)
    text = _text(tiny_model)
    c, ca = base.config.in_channels, base.config.audio_in_channels
    aud = _audio_clip(25, ca)
    spans = torch.full((MAX_AUDIO_SPANS, 2), float("nan"))
    spans[0] = torch.tensor([0.2, 0.4])
    ref = aud.flip(0) * 0.5
    cols = {"latents": torch.zeros(c, 1, 1, 1), "audio": aud, "audio_spans": spans, "ref_audio": ref}
    cache_dir = _write_cache(tmp_path, tiny_model, conditions, cols, text)
    cfg = TrainConfig(model_dir=tiny_model, cache_dir=cache_dir, steps=120, learning_rate=1e-2, rank=16,
                      lora_targets=targets, conditions=conditions.to_json(), seed=0, progress=False, log_every=40)
    saved = {}
    run_worker(cfg, WorkerContext(), lambda m, d: saved.update(lora=load_file(str(Path(d) / LORA_FILE))) if d else None)
    given = {"audio": aud[None], "audio_spans": spans[None], "ref_audio": ref[None]}
    free = torch.ones(25, dtype=torch.bool)
    free[kept] = False

    def generate(transformer) -> float:
        _, out = sample_latents(transformer, text, (1, 1, 1), 25.0, steps=10, conditions=conditions.items,
                                cols=given, audio_steps=25, generator=torch.Generator().manual_seed(0),
                                video_role="absent")
        assert torch.equal(out[0, kept], aud[kept])  # the given steps, bit for bit
        return torch.mean((out[0, free] - aud[free]) ** 2).item()

    before = generate(base)
    attach_lora(base, 16, targets)
    load_lora_state_dict(base, saved["lora"])
    after = generate(base.eval())
    assert after < 0.6 * before, (before, after)


# ------------------------------------------------------------------------------------------------------ previews
def test_audio_reel_joins_previews_with_gaps_labels_them_and_draws_a_spectrogram_each(tmp_path):
    from PIL import Image

    from ltxtrain.export.reel import Preview, spectrogram, write_audio_reel

    t = np.arange(24000) / 24000
    tone = lambda f, n: (0.5 * np.stack([np.sin(2 * np.pi * f * t[:n])] * 2)).astype(np.float32)
    previews = [Preview(step=50, prompt="a buzz", frames=None, fps=25, audio=tone(3000, 8000), audio_rate=16000),
                Preview(step=50, prompt="a hum", frames=None, fps=25, audio=tone(440, 24000), audio_rate=24000)]
    labels = write_audio_reel(str(tmp_path / "v.wav"), previews, gap=0.5)
    assert json.loads((tmp_path / "v.json").read_text()) == labels
    segs = labels["segments"]
    assert [s["prompt"] for s in segs] == ["a buzz", "a hum"]  # the reel's order (by step, then entry)
    assert labels["audio_rate"] == 16000 and segs[1]["start"] == pytest.approx(segs[0]["end"] + 0.5)
    with wave.open(str(tmp_path / "v.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert pcm.shape[0] == round(segs[1]["end"] * 16000)
    gap = pcm[int(segs[0]["end"] * 16000) + 10: int(segs[1]["start"] * 16000) - 10]
    assert gap.size and not gap.any() and np.abs(pcm[:8000]).max() > 10000  # silence between, sound in the clips
    for s in segs:
        img = np.asarray(Image.open(tmp_path / s["spectrogram"]))
        assert img.ndim == 3 and img.shape[1] >= 256
    db = spectrogram(tone(3000, 8000), 24000)  # the tone was made at 24 kHz
    assert abs(db.mean(1).argmax() * 12000 / (db.shape[0] - 1) - 3000) < 50  # the tone's band is the loudest


@pytest.mark.parametrize("endpoint,payload,kept", [
    ("audio-inpaint", {}, lambda n: [i for i in range(n) if not 5 <= i < 10]),  # [[0.2, 0.4]] regenerated
    ("audio-extend-prefix", {"conditioning_seconds": 0.2}, lambda n: list(range(5))),
    ("audio-extend-suffix", {"conditioning_seconds": 0.2}, lambda n: list(range(n - 5, n))),
    ("a2a", {}, lambda n: []),  # the reference rides along appended; the target is all generated
])
def test_audio_only_conditions_keep_exactly_their_steps_through_the_shared_sampler(tiny_model, endpoint, payload,
                                                                                     kept):
    from ltxtrain.conditioning.kinds import MAX_AUDIO_SPANS
    from ltxtrain.conditioning.tokens import assemble
    from ltxtrain.sample.sampler import sample_latents

    recipe = get_recipe(endpoint)
    conditions = recipe.bind(recipe.parse({"training_data_url": "x", "audio_duration_seconds": 1.0, **payload}), True)
    tr = _tiny(tiny_model)
    ca = tr.config.audio_in_channels
    aud = _audio_clip(25, ca)[None]
    spans = torch.full((1, MAX_AUDIO_SPANS, 2), float("nan"))
    spans[0, 0] = torch.tensor([0.2, 0.4])
    ref = _audio_clip(25, ca)[None].flip(1)
    cols = {"audio": aud, "audio_spans": spans, "ref_audio": ref}
    _, at = assemble(conditions.items, tr.rope, tr.audio_rope, {"latents": torch.zeros(1, tr.config.in_channels, 1, 1, 1),
                                                                **cols}, torch.tensor([0.5]), 25.0,
                     noisy=torch.zeros(1, 1, tr.config.in_channels), audio_noisy=torch.zeros_like(aud),
                     video_role="absent")
    assert at.cond[0, :25].nonzero().flatten().tolist() == kept(25)
    assert at.hidden.shape[1] == (50 if endpoint == "a2a" else 25) and at.cond[0, 25:].all()
    _, out = sample_latents(tr, _text(tiny_model), (1, 1, 1), 25.0, steps=4, conditions=conditions.items, cols=cols,
                            audio_steps=25, generator=torch.Generator().manual_seed(0), video_role="absent")
    keep = torch.tensor(kept(25), dtype=torch.long)
    assert torch.equal(out[0, keep], aud[0, keep])  # the given steps, bit for bit
    free = torch.ones(25, dtype=torch.bool)
    free[keep] = False
    assert not torch.isclose(out[0, free], aud[0, free]).all(-1).any()  # the others were generated


def test_av2av_routes_are_one_contract_and_both_clips_need_a_track(tmp_path):
    a, b = get_recipe("av2av"), get_recipe("ic-lora/av2av")
    assert (a.conditions, a.request_model, a.roles) == (b.conditions, b.request_model, b.roles)
    z = make_zip(tmp_path, {"a_start.mp4": "avideo:0.5", "a_end.mp4": "avideo:0.5", "b_start.mp4": "video:0.5",
                            "b_end.mp4": "avideo:0.5"})
    errs = errors("ic-lora/av2av", {"training_data_url": z, **SMALL_AV})
    assert locs(errs) == [("body", "training_data_url", "b_start.mp4")] and "no audio track" in errs[0]["msg"]
    errs = errors("av2av", {"training_data_url": "x", "reference_downscale_factor": 5})
    assert locs(errs)[0] == ("body", "reference_downscale_factor")
    bound = a.bind(a.parse({"training_data_url": "x"}), True)
    assert (bound.video, bound.audio) == ("generated", "generated")


# ------------------------------------------------------------------------------------------------------ fitting
def _cfg(conditions, **kw):
    from ltxtrain.encode.pipeline import PreprocessConfig

    return PreprocessConfig(model_dir="m", cache_dir="", conditions=conditions, audio=True, audio_sample_rate=16000,
                            **kw)


def test_audio_only_samples_fit_to_the_bucket_with_a_placeholder_and_their_spans(tmp_path):
    from ltxtrain.encode.pipeline import fit_sample
    from ltxtrain.media.fit import TimeWindow

    recipe = get_recipe("audio-inpaint")
    request = recipe.parse({"training_data_url": "x", "audio_duration_seconds": 1.0})
    conditions = recipe.bind(request, True).items
    write_audio(tmp_path / "a.flac", 1.6)
    (tmp_path / "m.json").write_text("[[0.2, 0.4], [0.9, 3.0], [2.0, 2.5]]")
    cfg = _cfg(conditions, width=32, height=32, num_frames=request.number_of_frames, frame_rate=request.frame_rate)
    ctx = cfg.context({"target": str(tmp_path / "a.flac"), "audio_mask": str(tmp_path / "m.json")}, "audio",
                      TimeWindow(0.0, 1.6))
    out = fit_sample(cfg, ctx, "audio")
    assert set(out) == {"none:latents", "audio:audio", "raw:audio_spans"}
    assert out["audio:audio"].shape == (2, 16000) and abs(float(np.abs(out["audio:audio"]).max()) - 0.999) < 1e-3
    spans = out["raw:audio_spans"]
    assert np.allclose(spans[:2], [[0.2, 0.4], [0.9, 1.0]]) and np.isnan(spans[2:]).all()  # clipped to the bucket


def test_a2v_fits_the_start_videos_first_frame_and_its_track_over_the_target(tmp_path):
    from ltxtrain.encode.pipeline import fit_sample
    from ltxtrain.media.fit import TimeWindow, decode_and_fit, FitSpec

    recipe = get_recipe("a2v")
    conditions = recipe.bind(recipe.parse({"training_data_url": "x"}), True).items
    write_video(str(tmp_path / "s.mp4"), 0.5, 25, 160, 96, seed=3, audio="stereo48k")
    write_video(str(tmp_path / "e.mp4"), 0.8, 25, 160, 96, seed=4)  # silent target: its track is never read
    cfg = _cfg(conditions, width=64, height=32, num_frames=17, frame_rate=25)
    media = {"target": str(tmp_path / "e.mp4"), "first_frame_image": str(tmp_path / "s.mp4")}
    out = fit_sample(cfg, cfg.context(media, "video", TimeWindow(0.0, 0.8)), "video")
    assert set(out) == {"video:latents", "audio:audio", "video:first_frame"}
    first = decode_and_fit(str(tmp_path / "s.mp4"), FitSpec(64, 32, 1, 25.0), TimeWindow(0.0, 0.04), auto_scale=True)
    assert out["video:first_frame"].shape == (1, 32, 64, 3) and np.array_equal(out["video:first_frame"], first)
    assert out["audio:audio"].shape == (2, round(17 / 25 * 16000))  # 0.5 s of track stretched over 0.68 s
    assert float(np.abs(out["audio:audio"]).max()) > 0.5
    write_audio(tmp_path / "a.wav", 2.0)  # an `_audio` file wins over the `_start` video's track
    out = fit_sample(cfg, cfg.context({**media, "given_audio": str(tmp_path / "a.wav")}, "video",
                                      TimeWindow(0.0, 0.8)), "video")
    assert out["audio:audio"].shape == (2, round(17 / 25 * 16000))


@pytest.mark.parametrize("endpoint", ["a2v", "v2a"])
def test_previews_of_a2v_carry_both_streams_and_of_v2a_only_sound(tiny_model, tmp_path, endpoint):
    """An entry through the real validation path in-process (encode_entry, render_previews with the model's
    decoders): a2v's preview is a picture with the given track muxed in; v2a's is sound only (an audio reel)."""
    from ltxtrain.encode.audio_encoder import model_audio_steps
    from ltxtrain.encode.cache import LatentCache, atomic_save, from_bytes
    from ltxtrain.export.reel import read_reel, write_audio_reel, write_reel
    from ltxtrain.models.bundle import load_components
    from ltxtrain.sample.validation import ValidationItem, encode_entry, render_previews

    recipe = get_recipe(endpoint)
    conditions = recipe.bind(recipe.parse({"training_data_url": "x"}), True)
    if endpoint == "a2v":
        from PIL import Image

        Image.fromarray(np.full((32, 64, 3), 200, np.uint8)).save(tmp_path / "start.png")
        write_audio(tmp_path / "a.wav", 0.5)
        media = {"first_frame_image": str(tmp_path / "start.png"), "given_audio": str(tmp_path / "a.wav")}
    else:
        write_video(str(tmp_path / "v.mp4"), 0.5, 25, 64, 32, seed=1)
        media = {"target": str(tmp_path / "v.mp4")}
    item = ValidationItem(index=0, prompt="p", text_id="t", negative_text_id="t", width=64, height=32, num_frames=9,
                          fps=25.0, conditions_id="val", audio=True, stg_scale=0.0,
                          audio_steps=model_audio_steps(tiny_model, 9 / 25))
    fields = {role: name for name, role in recipe.validation_roles().items()}
    cache = LatentCache(tmp_path / "cache")
    text = _text(tiny_model)
    cache.write_text("t", text.video[0], text.audio[0], text.mask[0])
    cols = from_bytes(encode_entry(tiny_model, item, media, conditions, fields))
    atomic_save(cols, cache.video_path("val"))  # as plan_validation stores an entry
    assert ("audio" in cols) == (endpoint == "a2v") and ("latents" in cols) == (endpoint == "v2a")
    decoders = {k: v.eval() for k, v in load_components(tiny_model, ["vae", "audio_vae", "vocoder"]).items()}
    [preview] = render_previews(_tiny(tiny_model), [item], cache, 100, torch.device("cpu"), decoders, conditions)
    assert preview.audio is not None and preview.audio.shape[0] == 2
    if endpoint == "a2v":
        assert preview.frames.shape[0] == 9
        info = write_reel(str(tmp_path / "r.mp4"), [preview])
        back = read_reel(str(tmp_path / "r.mp4"))
        assert info["has_audio"] and back["audio"] is not None and back["audio"].shape[0] == 2
    else:
        assert preview.frames is None
        labels = write_audio_reel(str(tmp_path / "r.wav"), [preview])
        assert labels["segments"][0]["end"] == pytest.approx(9 / 25, abs=0.05)
